"""Writes bursty.csv, the synthetic request trace `thaw bench utilisation` ships with.

One hour of traffic to one model: a quiet baseline (Poisson, one request every 20 s on average)
and four one-minute bursts (Poisson, 4 requests/s) 15 minutes apart, the shape that makes
serverless inference scale from few replicas to many and back. Service times are log-normal
(median 1.5 s, sigma 0.5, capped at 20 s), roughly one short generation each. Deterministic
(seeded): `python3 benches/traces/make_bursty.py > benches/traces/bursty.csv`. Another seed gives
another day of the same traffic, which the planner plans from:
`python3 benches/traces/make_bursty.py 20261123 > benches/traces/bursty-history.csv`.
"""

import math
import random
import sys

rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 20261124)
arrivals = []
t = 0.0
while True:
    t += rng.expovariate(1 / 20)
    if t >= 3600:
        break
    arrivals.append(t)
for burst_start in (300, 1200, 2100, 3000):
    t = float(burst_start)
    while True:
        t += rng.expovariate(4)
        if t >= burst_start + 60:
            break
        arrivals.append(t)
print("arrival_s,service_s")
for a in sorted(arrivals):
    service = min(20.0, 1.5 * math.exp(rng.gauss(0, 0.5)))
    print(f"{a:.3f},{service:.3f}")
