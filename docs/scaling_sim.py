#!/usr/bin/env python3
"""Simulation behind docs/scaling.md: what share of the station each
all-messages-service replica must read, with and without partition-aware
routing, as rooms, subscribers and replicas grow.

Model: rooms hash to P partitions (a subject token, `chat.messages.p<k>.<room>`);
a replica reads a whole partition iff it serves a subscriber whose (first) room
is in it. Routing "any": subscribers land on replicas uniformly at random (a
plain load balancer). Routing "by partition": a consistent-hash ring over
replicas owns each partition, and a subscriber goes to the owner of its first
room's partition. A multi-room subscriber's other rooms (10 % of subscribers
follow 3 more, random rooms) are read room by room (a consumer filtered on
those rooms' subjects), not by partition. Messages are spread evenly over
rooms, so a replica's share of the station is its partitions' share plus its
extra rooms' share.

Prints, per scenario, the mean share of the station a replica reads, the
station rate the whole system sustains given one replica's measured ingest
ceiling (argument, msg/s), and how many partitions move when one replica is
added (rebalance). Deterministic (seeded). Usage:
    python3 docs/scaling_sim.py [replica_ceiling_msgs_per_s]
"""

import bisect
import hashlib
import random
import sys


def h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Ring:
    """Consistent hashing with 64 virtual nodes per replica."""

    def __init__(self, replicas: int):
        self.points = sorted((h(f"replica-{r}-{v}"), r) for r in range(replicas) for v in range(64))
        self.keys = [p for p, _ in self.points]

    def owner(self, key: str) -> int:
        i = bisect.bisect(self.keys, h(key)) % len(self.points)
        return self.points[i][1]


def simulate(rooms, per_room, replicas, partitions, multi_share, routing, rng):
    ring = Ring(replicas)
    part = [h(f"room-{r}") % partitions for r in range(rooms)]
    owned = [set() for _ in range(replicas)]
    extra = [set() for _ in range(replicas)]
    for room in range(rooms):
        for _ in range(per_room):
            if routing == "any":
                replica = rng.randrange(replicas)
            else:
                replica = ring.owner(f"p{part[room]}")
            owned[replica].add(part[room])
            if rng.random() < multi_share:
                extra[replica].update(rng.sample(range(rooms), 3))
    shares = []
    for mine, more in zip(owned, extra):
        outside = sum(1 for r in more if part[r] not in mine)
        shares.append(len(mine) / partitions + outside / rooms)
    return sum(shares) / replicas, max(shares)


def moved(partitions, replicas):
    before, after = Ring(replicas), Ring(replicas + 1)
    return sum(before.owner(f"p{k}") != after.owner(f"p{k}") for k in range(partitions)) / partitions


def main():
    ceiling = float(sys.argv[1]) if len(sys.argv) > 1 else 10_000.0
    rng = random.Random(7)
    print(f"one replica's ingest ceiling: {ceiling:,.0f} msg/s (make bench: replica_ingest_msgs_per_s)")
    print("| rooms | subscribers | replicas | partitions | routing | mean share read | worst | system msg/s |")
    print("|---|---|---|---|---|---|---|---|")
    for rooms, per_room, replicas in [(1_000, 10, 4), (10_000, 10, 10), (100_000, 10, 50)]:
        for partitions in [1, 256]:
            for routing in (["any"] if partitions == 1 else ["any", "by partition"]):
                mean, worst = simulate(rooms, per_room, replicas, partitions, 0.1, routing, rng)
                # Every replica must keep up with its share of the station.
                system = ceiling / worst
                print(f"| {rooms:,} | {rooms * per_room:,} | {replicas} | {partitions} | {routing} "
                      f"| {mean:.2f} | {worst:.2f} | {system:,.0f} |")
    print()
    for replicas in [4, 10, 50]:
        print(f"adding a replica to {replicas}: {moved(256, replicas):.1%} of 256 partitions move")


if __name__ == "__main__":
    main()
