#!/usr/bin/env python3
"""Print the msgs/s figure of rdkafka_performance's final summary line (stdin)."""
import re
import sys

rate = None
for line in sys.stdin:
    m = re.search(r"(\d+) msgs/s", line)
    if m:
        rate = m.group(1)
if rate is None:
    sys.exit("no msgs/s figure in rdkafka_performance output")
print(rate)
