"""Reading dates written as text, the one way every stage does it."""

from __future__ import annotations

from typing import Any

import pandas as pd


def parse_datetimes(values: Any) -> Any:
    """Timezone-aware (UTC) timestamps from ISO 8601 text, or any format pandas infers.

    Raises ``ValueError``/``TypeError``/``OverflowError`` on a value neither reads;
    callers turn that into their own error naming the column.
    """
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except ValueError:
        # Per-value format inference is much slower, so it is only the fallback.
        return pd.to_datetime(values, utc=True, format="mixed")
