"""The JSON Schemas, installed as `mnn_parity.schemas` so that they ship inside the wheel."""
