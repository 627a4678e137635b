import sys
from pathlib import Path

# `from tests import onnx_models` works from the repository root without installing the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
