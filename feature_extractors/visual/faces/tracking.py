"""Following the main face of a clip across frames."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from feature_extractors.visual.faces.detectors import Box


def track_main_face(boxes_per_frame: Sequence[np.ndarray], gate: float = 1.5) -> list[Box | None]:
    """One box per frame (``None`` where the main face is not found), following the main face.

    Boxes are linked into tracks frame by frame: a box joins the track whose last box is nearest
    (centre distance below ``gate`` times that box's side), else it starts a new track. The main
    face is the track with the largest summed area, so a face that is both big and present wins
    over a bigger face seen once (a passer-by, a false detection). ``boxes_per_frame``: T arrays
    ``[N_t, 4]``. A frame whose only face belongs to another track gets ``None``: it is dropped
    rather than filled with someone else.
    """
    picks = main_face_indices(boxes_per_frame, gate)
    out: list[Box | None] = []
    for boxes, k in zip(boxes_per_frame, picks, strict=True):
        out.append(None if k is None else
                   tuple(int(v) for v in np.asarray(boxes).reshape(-1, 4)[k]))
    return out


def main_face_indices(boxes_per_frame: Sequence[np.ndarray], gate: float = 1.5) -> list[int | None]:
    """:func:`track_main_face` as the index of the main face's box in each frame's array."""
    tracks: list[dict[int, int]] = []                      # per track: frame -> box index
    areas: list[float] = []                                # per track: summed box area
    last: list[np.ndarray] = []                            # per track: its latest box
    for t, boxes in enumerate(boxes_per_frame):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        taken: set[int] = set()
        for i in np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable"):
            box = boxes[i]
            centre = box[:2] + box[2:] / 2
            best, best_dist = -1, np.inf
            for k, prev in enumerate(last):
                dist = np.linalg.norm(centre - (prev[:2] + prev[2:] / 2))
                if k not in taken and dist < gate * max(prev[2], prev[3]) and dist < best_dist:
                    best, best_dist = k, dist
            if best < 0:
                tracks.append({})
                areas.append(0.0)
                last.append(box)
                best = len(tracks) - 1
            tracks[best][t] = int(i)
            areas[best] += float(box[2] * box[3])
            last[best] = box
            taken.add(best)
    picks: list[int | None] = [None] * len(boxes_per_frame)
    if not tracks:
        return picks
    for t, i in tracks[int(np.argmax(areas))].items():
        picks[t] = i
    return picks
