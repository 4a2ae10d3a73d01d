"""Turns nfsbench JSON lines (scripts/bench-nfs-peers.sh) into one Markdown table:
Tessera and ganesha per run, and the ratio Tessera / ganesha of each column."""
import json
import sys

COLUMNS = [
    ("write_MBps", "seq write MB/s (UNSTABLE + COMMIT)"),
    ("read_MBps", "seq read MB/s"),
    ("create_ops", "creates/s"),
    ("remove_ops", "removes/s"),
    ("getattr_ops", "GETATTR/s"),
    ("null_rtt_us", "NULL µs"),
]


def main(path):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    print("| in flight | run | system | " + " | ".join(c[1] for c in COLUMNS) + " | load before |")
    print("|---|---|---|" + "---|" * len(COLUMNS) + "---|")
    # bench.sh writes ganesha's line, then Tessera's, per run.
    runs = {}
    for r in rows:
        runs.setdefault(r["conc"], []).append(r)
    for conc, lines in runs.items():
        for i in range(0, len(lines) - 1, 2):
            g, t = lines[i], lines[i + 1]
            if not g["label"].startswith("ganesha") or t["label"] != "tessera":
                sys.exit(f"unexpected order of results: {g['label']}, {t['label']}")
            n = i // 2 + 1
            for r in (g, t):
                vals = " | ".join(str(r.get(k, "—")) for k, _ in COLUMNS)
                print(f"| {conc} | {n} | {r['label']} | {vals} | {r['loadavg_before']} |")
            ratios = []
            for k, _ in COLUMNS:
                gv, tv = g.get(k), t.get(k)
                if not gv or tv is None:
                    ratios.append("—")
                elif k == "null_rtt_us":
                    ratios.append(f"**{gv / tv:.2f}×**")  # lower is better: ganesha / Tessera
                else:
                    ratios.append(f"**{tv / gv:.2f}×**")
            print(f"| {conc} | {n} | Tessera / ganesha | " + " | ".join(ratios) + " | |")


if __name__ == "__main__":
    main(sys.argv[1])
