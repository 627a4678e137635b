"""Audio steps: `audio` reads a PCM WAV file into float32 samples in [-1, 1); `frame` cuts a 1-D signal into
overlapping windows, as streaming speech models take it."""
from __future__ import annotations

import math
import os
import wave
from pathlib import Path

import numpy as np

from mnn_parity.inputs.preprocess.errors import StepError
from mnn_parity.inputs.preprocess.options import Options
from mnn_parity.inputs.preprocess.tensor import need_rank


def _pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    frame_bytes = width * channels
    raw = raw[:len(raw) - len(raw) % frame_bytes]   # a truncated last frame is dropped
    if width == 1:    # 8-bit WAV is unsigned, centred on 128
        ints = np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128
    elif width == 2:
        ints = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) ^ 0x800000) - 0x800000   # sign-extend 24 bits
    elif width == 4:
        ints = np.frombuffer(raw, dtype="<i4").astype(np.int64)
    else:
        raise StepError(f"unsupported sample width {width * 8} bits; 8, 16, 24 and 32-bit PCM are read")
    # Divide by 2^(bits-1): full scale maps to [-1, 1) exactly, and 16-bit samples stay exact in float32.
    scaled = ints.astype(np.float64) / float(2 ** (8 * width - 1))
    return scaled.reshape(-1, channels)


def audio(path: Path, o: Options) -> np.ndarray:
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as e:
        raise StepError(f"not a PCM WAV file the stdlib wave module can read ({e}); "
                        "8, 16, 24 and 32-bit integer PCM are supported") from None
    except OSError as e:
        raise StepError(f"could not read: {e}") from None
    samples = _pcm_to_float(raw, width, channels)
    if o["mono"]:
        samples = samples.mean(axis=1)
    if rate != o["sample_rate"]:
        if not o["resample"]:
            raise StepError(f"sample rate is {rate} Hz but the step asks for {o['sample_rate']} Hz; "
                            "set resample: true to convert it")
        from scipy.signal import resample_poly
        g = math.gcd(o["sample_rate"], rate)
        samples = resample_poly(samples, o["sample_rate"] // g, rate // g, axis=0)
    return np.ascontiguousarray(samples, dtype=np.float32)


def frame(x: np.ndarray, o: Options) -> np.ndarray:
    need_rank(x, (1,), "a 1-D signal")
    size, hop = o["size"], o["hop"]
    if x.shape[0] == 0:
        raise StepError("the signal is empty")
    if o["pad_start"]:
        # Streaming models see the tail of the previous chunk as context (Silero VAD: 64 samples, zeros at first).
        x = np.concatenate([np.zeros(o["pad_start"], dtype=x.dtype), x])
    n = x.shape[0]
    if o["pad"]:
        # Enough frames to cover every sample; the tail is zero-padded.
        n_frames = -(-max(n - size, 0) // hop) + 1
        needed = (n_frames - 1) * hop + size
        x = np.concatenate([x, np.zeros(needed - n, dtype=x.dtype)]) if needed > n else x
    else:
        if n < size:
            raise StepError(f"the signal has {n} samples, fewer than one frame of {size}; set pad: true")
        n_frames = (n - size) // hop + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, size)
    return np.ascontiguousarray(windows[::hop][:n_frames])
