"""Top SASS instructions by warp-stall samples from `ncu --page source --csv --print-source sass`."""
import csv
import sys

rows = list(csv.reader(open(sys.argv[1])))
hdr_i = next(i for i, r in enumerate(rows) if any("Source" == c or "Address" == c for c in r))
hdr = rows[hdr_i]
print("columns:", [h for h in hdr][:40])
src = hdr.index("Source")
samp = next((i for i, h in enumerate(hdr) if h.startswith("Warp Stall Sampling (All")), None)
if samp is None:
    sys.exit("no sampling column")
stall_cols = [i for i, h in enumerate(hdr) if h.startswith("stall_") or "Stall" in h]
data = []
for r in rows[hdr_i + 1:]:
    try:
        v = float(r[samp] or 0)
    except (ValueError, IndexError):
        continue
    data.append((v, r))
tot = sum(v for v, _ in data)
print("total samples", tot, "instructions", len(data))
for v, r in sorted(data, key=lambda x: -x[0])[:40]:
    print(f"{100 * v / tot:5.1f}%  {r[src][:90]}")
