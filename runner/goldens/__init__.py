"""Goldens: the blessed outputs of each case and backend (`storage`), how one is written (`serialization`), and
how a run has moved since (`drift`), split as syrupy splits its snapshot store."""
from mnn_parity.goldens.drift import attach_drift, classify_drift
from mnn_parity.goldens.serialization import GOLDEN_LAYOUT, Golden, GoldenError, decode_name, encode_name
from mnn_parity.goldens.storage import GoldenStore

__all__ = ["GOLDEN_LAYOUT", "Golden", "GoldenError", "GoldenStore", "attach_drift", "classify_drift", "decode_name",
           "encode_name"]
