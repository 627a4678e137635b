"""The quantizer's child process: MNN's int8 quantizer extension and nothing else.

    python sandbox.py ... -- quantize_child.py SRC.mnn DST.mnn CONFIG.json

Like `converter_child.py`: the sandbox has made `MNN.tools` (whose `mnnquant` pip-installs a logging SDK and posts
telemetry) unimportable and the network unreachable. `_tools.mnnquant` returns success whatever happened, so the
parent judges the log and the file, never this exit status alone. Stand-alone: it runs under `--mnn` venvs too.
"""
import sys

import _tools

_tools.mnnquant(["mnn-parity-quantize"] + sys.argv[1:])   # argv[0]: a program name only
