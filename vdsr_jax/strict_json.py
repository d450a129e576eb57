"""JSON as RFC 8259 defines it, which has no infinities or NaN, for records that may hold them (an image
reproduced exactly has an infinite PSNR): every non-finite float is written as the string 'inf', '-inf' or
'nan'. Used by the `evaluate` command's results and the training's `metrics.jsonl`."""
import json
import math


def json_safe(value):
    """`value` (nested dicts, lists, numbers) with every non-finite float as the string 'inf', '-inf' or
    'nan', so that it is valid RFC 8259 JSON, which has no infinities."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(value, indent: int | None = None) -> str:
    """The JSON text of `json_safe(value)`, indented as `json.dumps` indents."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)
