"""The converter's child process: MNN's C++ converter extension and nothing else.

Started as `python sandbox.py ... -- converter_child.py ARGS`: the sandbox has already made `MNN.tools` and the
logging SDK unimportable and the network unreachable, so whatever the extension does, it installs nothing and posts
nothing. Stand-alone, because it runs under an `--mnn VERSION` interpreter too.
"""
import sys

import _tools

_tools.mnnconvert(["mnn-parity-convert"] + sys.argv[1:])   # argv[0]: a program name only
