"""Audio steps: PCM WAV files of every sample width written here, and framing against hand-computed windows."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.inputs.preprocess import PreprocessError, run_pipeline


def run(steps, x):
    return run_pipeline(steps, np.asarray(x))


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


# --- audio -----------------------------------------------------------------------------------------------------

def test_wav_16bit_exact_values(tmp_path):
    samples = np.array([0, 16384, -16384, 32767, -32768, 1], dtype="<i2")
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "a.wav", samples, 8000))
    assert x.dtype == np.float32 and x.shape == (6,)
    np.testing.assert_array_equal(x, np.float32([0, 0.5, -0.5, 32767 / 32768, -1.0, 1 / 32768]))


def test_wav_8_24_32_bit_and_stereo(tmp_path):
    u8 = np.array([128, 192, 0, 255], dtype=np.uint8)
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "u8.wav", u8, 8000, width=1))
    np.testing.assert_array_equal(x, np.float32([0, 0.5, -1, 127 / 128]))
    # 24-bit little-endian: 0x400000 = 0.5, 0xC00000 = -0.5, 0x800000 = -1
    raw24 = np.frombuffer(bytes([0, 0, 0x40, 0, 0, 0xC0, 0, 0, 0x80]), dtype=np.uint8)
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "s24.wav", raw24, 8000, width=3))
    np.testing.assert_array_equal(x, np.float32([0.5, -0.5, -1]))
    i32 = np.array([2 ** 30, -(2 ** 31)], dtype="<i4")
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "s32.wav", i32, 8000, width=4))
    np.testing.assert_array_equal(x, np.float32([0.5, -1]))
    stereo = np.array([16384, 0, -16384, -16384], dtype="<i2")   # frames (L, R): (0.5, 0), (-0.5, -0.5)
    path = write_wav(tmp_path / "st.wav", stereo, 8000, channels=2)
    np.testing.assert_array_equal(run_pipeline([{"audio": {"sample_rate": 8000}}], path), np.float32([0.25, -0.5]))
    both = run_pipeline([{"audio": {"sample_rate": 8000, "mono": False}}], path)
    np.testing.assert_array_equal(both, np.float32([[0.5, 0], [-0.5, -0.5]]))


def test_wav_wrong_rate_without_resample_is_an_error(tmp_path):
    path = write_wav(tmp_path / "a.wav", np.zeros(80, "<i2"), 8000)
    with pytest.raises(PreprocessError) as info:
        run_pipeline([{"audio": {"sample_rate": 16000}}], path)
    assert str(info.value).startswith(f"{path}: step 1 (audio): sample rate is 8000 Hz")
    assert "resample: true" in str(info.value)


@pytest.mark.slow
def test_wav_resample_8000_to_16000(tmp_path):
    t = np.arange(800) / 8000
    samples = (np.sin(2 * np.pi * 440 * t) * 16000).astype("<i2")
    x = run_pipeline([{"audio": {"sample_rate": 16000, "resample": True}}], write_wav(tmp_path / "a.wav", samples, 8000))
    assert x.dtype == np.float32 and x.shape == (1600,)
    # a 440 Hz tone survives: every second sample of the resampled signal tracks the original away from the edges
    np.testing.assert_allclose(x[200:1400:2], samples[100:700] / 32768, atol=0.01)


def test_non_wav_is_an_error(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00JUNK")
    with pytest.raises(PreprocessError, match=r"a\.wav: step 1 \(audio\): not a PCM WAV"):
        run_pipeline([{"audio": {}}], path)


# --- frame -----------------------------------------------------------------------------------------------------

def test_frame_ten_samples_size4_hop3():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(run([{"frame": {"size": 4, "hop": 3}}], x),
                                  [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])


def test_frame_pads_the_tail_or_drops_it():
    x = np.arange(1, 12, dtype=np.float32)   # 11 samples
    padded = run([{"frame": {"size": 4, "hop": 3}}], x)
    np.testing.assert_array_equal(padded, [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10], [10, 11, 0, 0]])
    dropped = run([{"frame": {"size": 4, "hop": 3, "pad": False}}], x)
    np.testing.assert_array_equal(dropped, padded[:3])
    np.testing.assert_array_equal(run([{"frame": {"size": 4}}], np.float32([1, 2])), [[1, 2, 0, 0]])
    with pytest.raises(PreprocessError, match="fewer than one frame"):
        run([{"frame": {"size": 4, "pad": False}}], np.float32([1, 2]))


def test_frame_pad_start_gives_each_frame_the_previous_context():
    """Silero VAD's framing: 64 samples of context + 512 new ones; here 2 + 3 on a 7-sample signal."""
    signal = np.arange(1, 8, dtype=np.float32)
    frames = run_pipeline([{"frame": {"size": 5, "hop": 3, "pad_start": 2}}], signal)
    np.testing.assert_array_equal(frames, [[0, 0, 1, 2, 3], [2, 3, 4, 5, 6], [5, 6, 7, 0, 0]])


def test_frame_of_a_2d_array_is_an_error():
    with pytest.raises(PreprocessError, match=r"step 1 \(frame\): expects a 1-D signal"):
        run([{"frame": {}}], np.zeros((4, 4), np.float32))
