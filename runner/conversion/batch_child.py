"""A converter child that converts many models: MNN's converter extension, one request per line on stdin.

Started behind the sandbox like `converter_child.py` (so `MNN.tools` and the network are already blocked), and
stand-alone for the same reason: it runs under an `--mnn VERSION` interpreter too. Each request is a JSON line
{"argv": [...], "log": PATH, "cwd": PATH}; the extension's C stdio (fd 1 and 2) is pointed at that log file for
the conversion, and the answer, {"done": N}, goes back on the original stdout. If the extension kills the process,
the parent sees the pipe close and names the signal, as it does for a one-shot child.
"""
import ctypes
import json
import os
import sys

# The answers' pipe is fd 1 as started; everything else the extension prints (on import too: "The device
# supports: ...") must never reach it, or the parent would take a stray line for an answer.
answers = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)

import _tools  # noqa: E402  (after the redirection above, on purpose)

_libc = ctypes.CDLL(None)


def serve() -> None:
    saved = (os.dup(1), os.dup(2))
    for count, line in enumerate(sys.stdin, 1):
        request = json.loads(line)
        os.chdir(request["cwd"])
        with open(request["log"], "ab", buffering=0) as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                _tools.mnnconvert(["mnn-parity-convert"] + request["argv"])
            finally:
                sys.stdout.flush()
                _libc.fflush(None)                        # C stdio too, before fd 1 points elsewhere
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
        answers.write(json.dumps({"done": count}) + "\n")


serve()
