#!/usr/bin/env python3
"""Independent counts for test_track_sequences.cpp's real-event case (numpy + csv only):
the qallse barrel subset of TrackML event 1000 in ../shared/data/trackml/qallse_ez-0.5_hpt-1.0.
Run: python3 tests/data/real_event_counts.py [path/to/shared]"""
import csv, sys
import numpy as np

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
pre = shared + "/data/trackml/qallse_ez-0.5_hpt-1.0/event000001000-"
hits = {int(r["hit_id"]): r for r in csv.DictReader(open(pre + "hits.csv"))}
truth = list(csv.DictReader(open(pre + "truth.csv")))
parts = {int(r["particle_id"]): r for r in csv.DictReader(open(pre + "particles.csv"))}
f32 = lambda s: float(np.float32(float(s)))


def tracks(volumes, order, keep_first, min_hits, max_hits, truncate, min_pt):
    by = {}
    for t in truth:
        pid = int(t["particle_id"])
        h = hits[int(t["hit_id"])]
        if pid == 0 or int(h["volume_id"]) not in volumes:
            continue
        p = parts[pid]
        if order == "vertex":
            key = sum((f32(h[a]) - f32(p[b])) ** 2 for a, b in (("x", "vx"), ("y", "vy"), ("z", "vz")))
        else:
            key = float(h["hit_id"])
        by.setdefault(pid, []).append((key, int(h["hit_id"])))
    out = []
    for pid in sorted(by):
        seq = [hid for _, hid in sorted(by[pid])]
        if keep_first:
            seen, kept = set(), []
            for hid in seq:
                vl = (hits[hid]["volume_id"], hits[hid]["layer_id"])
                if vl not in seen:
                    seen.add(vl)
                    kept.append(hid)
            seq = kept
        if len(seq) < min_hits:
            continue
        if max_hits and len(seq) > max_hits:
            if not truncate:
                continue
            seq = seq[:max_hits]
        p = parts[pid]
        px, py, pz = (float(np.float32(float(p[c]))) for c in ("px", "py", "pz"))
        if (px * px + py * py) ** 0.5 < min_pt:
            continue
        out.append((pid, seq, (px * px + py * py + pz * pz) ** 0.5))
    return out


def summary(name, ts):
    n_hits = sum(len(s) for _, s, _ in ts)
    weighted = sum(sum((k + 1) * hid for k, hid in enumerate(s)) for _, s, _ in ts)
    print(f"{name}: tracks {len(ts)}, hits {n_hits}, sum_k (k+1)*hit_id {weighted}, sum p {sum(p for *_, p in ts):.6f}, "
          f"first pid {ts[0][0]} hits {ts[0][1]}")


summary("A pixel barrel [8], vertex order, 4..8, drop", tracks({8}, "vertex", False, 4, 8, False, 0.0))
summary("B barrel [8,13,17], vertex, first per layer, >=4, pT>1", tracks({8, 13, 17}, "vertex", True, 4, 0, False, 1.0))
summary("C barrel [8,13,17], hit_id order, 4..6 truncate", tracks({8, 13, 17}, "hit_id", False, 4, 6, True, 0.0))
