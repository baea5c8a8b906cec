"""Layout of the constructed W_p (monosemantic rows, digons, polygons): pure Python, so config validation
checks a layout without importing torch."""

from __future__ import annotations


def constructed_layout(
    n: int, n_p: int, n_mono: int, n_digons: int, polygons: list[int] | None = None
) -> list[int]:
    """Polygon sizes that fill the rows left after monosemantic rows and digons; raises if impossible.

    With `polygons=None` the remaining features are spread as evenly as possible over the remaining row
    pairs (each a 2-D plane holding one regular polygon of ≥ 3 vertices).
    """
    rows_left = n_p - n_mono - n_digons
    feats_left = n - n_mono - 2 * n_digons
    if n_mono < 0 or n_digons < 0:
        raise ValueError(f"n_mono={n_mono} and n_digons={n_digons} must be >= 0")
    if rows_left < 0 or feats_left < 0:
        raise ValueError(
            f"n_mono={n_mono} + n_digons={n_digons} need {n_mono + n_digons} rows and "
            f"{n_mono + 2 * n_digons} features, more than n_p={n_p} / n={n}"
        )
    if polygons is None:
        if rows_left % 2:
            raise ValueError(f"{rows_left} rows are left for polygons: must be even (2 rows per polygon)")
        planes = rows_left // 2
        if planes == 0:
            if feats_left:
                raise ValueError(f"{feats_left} features are left but no rows for polygons")
            return []
        base, extra = divmod(feats_left, planes)
        polygons = [base + (1 if i >= planes - extra else 0) for i in range(planes)]
    if any(k < 3 for k in polygons):
        raise ValueError(f"polygon sizes {polygons} must all be >= 3")
    if 2 * len(polygons) != rows_left or sum(polygons) != feats_left:
        raise ValueError(
            f"polygons {polygons} use {2 * len(polygons)} rows and {sum(polygons)} features; "
            f"{rows_left} rows and {feats_left} features are left"
        )
    return list(polygons)
