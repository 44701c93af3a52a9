"""A linear logical volume through its link (<image>-benchvg-lv1): sequential reads of the
volume against the same bytes of the raw disk (dd: the whole process; bench/drivers/seq.c:
its steady state), and what finding the volume adds to a first open."""

import shlex

from bench.config import MiB, TARGETS
from bench.harness import Cmd, Compare, added_ms, run, speed, steady
from bench.images import lvm_disk, restage, warm
from bench.cases.reads import dd


def lvm(b):
    with lvm_disk(b) as (raw, start, size, images):
        nbytes = min(size, b.scale.seq_bytes[MiB]) // MiB * MiB
        count = nbytes // MiB
        k = b.scale.open_batch
        spawn = [b.tools["spawn"], k]
        drv = b.tools["seq"]
        restage(b, [raw] + [f for v, _ in images for f in v.files])
        for v, link in images:
            whole_row = b.row("seq read dd bs=1M of a linear LV", v.name,
                              f"plain dd of the same bytes of the raw disk ({count} MiB)")
            steady_row = b.row("seq read bs=1M of a linear LV, steady state", v.name,
                               f"the same reads of the raw disk ({count} MiB, after the first)",
                               target=TARGETS["lvm-seq"])
            open_row = b.row("first open of an LV link: dd 1 sector", v.name,
                             "the same dd of the image itself", unit="ms",
                             target=TARGETS["lvm-open"])
            check = run(["sh", "-c", f"dd if={shlex.quote(str(link))} bs=1M count=1 skip=3"
                         " status=none | cksum"], env=b.env_lib).stdout
            want = run(["sh", "-c", f"dd if={shlex.quote(str(raw))} bs=1M count=1"
                        f" skip={start + 3 * MiB} iflag=skip_bytes status=none | cksum"]).stdout
            warm(v.files + [raw])
            b.measure({"raw dd": Cmd(dd(raw, count=count, extra=[f"skip={start}",
                                                                  "iflag=skip_bytes"])),
                       "volume dd": Cmd(dd(link, count=count), lib=True),
                       "raw": Cmd([drv, raw, MiB, nbytes, start]),
                       "volume": Cmd([drv, link, MiB, nbytes], lib=True)},
                      [Compare(whole_row, ("raw dd", "volume dd"), speed()),
                       Compare(steady_row, ("raw", "volume"), speed(steady))])
            if check != want:
                whole_row.status = steady_row.status = \
                    "ERROR: the volume returned other bytes than the raw disk"
            b.measure({"image": Cmd(spawn + dd(v.path, bs=512, count=1), lib=True),
                       "volume": Cmd(spawn + dd(link, bs=512, count=1), lib=True)},
                      [Compare(open_row, ("image", "volume"), added_ms(k))], warmup=True)
            b.publish()
