"""`vdiskio check`: structure checks. Exit status 0 when every image is clean, 1 when
problems were found, 2 when an image cannot be opened (the highest applies)."""

from ..errors import VdError
from .common import Paths, error_line, link_target, say_error

CLEAN, PROBLEMS, CANNOT_OPEN = 0, 1, 2


def check_one(path, paths):
    """A dict describing the outcome for `path` (an image or a partition/volume link)."""
    from .. import chain
    from ..formats import open_image
    result = {"image": paths.show(path)}
    target = path
    link = link_target(path)
    if link is not None:
        # A link's image is what holds structures to check; the partition table's bounds
        # are checked with it (info on the link says where the partition lies).
        target, what = link
        result["disk"] = paths.show(target)
        result["partition" if isinstance(what, int) else "volume"] = \
            what if isinstance(what, int) else path
    try:
        with chain.collecting():     # a parent that changed is a problem to list
            image = open_image(target)
    except VdError as e:
        result.update(status="cannot-open", error=error_line(e))
        return result
    try:
        result.update(format=image.format, variant=image.variant)
        problems = [{"file": paths.show(layer.path), "problem": p}
                    for layer in image.chain()
                    for p in layer.parent_problems + layer.check()]
        if link is not None and isinstance(link[1], int):
            problems += _partition_problems(image, target, link[1], paths)
    finally:
        image.close()
    result["status"] = "problems" if problems else "clean"
    result["problems"] = problems
    return result


def _partition_problems(image, target, number, paths):
    from ..partitions import NoPartitionTable, read_table
    try:
        table = read_table(image.read, image.size, target, image.logical_sector_size)
    except NoPartitionTable:
        return [{"file": paths.show(target), "problem": f"no partition table: partition"
                 f" {number} does not exist"}]
    except VdError as e:
        return [{"file": paths.show(target), "problem": f"partition table: {e.message}"}]
    if not any(p.number == number for p in table.partitions):
        return [{"file": paths.show(target), "problem": f"the {table.kind} table has no"
                 f" partition {number}"}]
    return []


STATUS = {"clean": CLEAN, "problems": PROBLEMS, "cannot-open": CANNOT_OPEN}


def cmd_check(args):
    from .common import print_json
    paths = Paths(args.images)
    results = [check_one(path, paths) for path in args.images]
    if args.json:
        print_json(results)
    else:
        for r in results:
            inside = f" (in {r['disk']})" if "disk" in r else ""
            if r["status"] == "cannot-open":
                say_error(f"{r['error']}{inside}")
            elif r["problems"]:
                for p in r["problems"]:
                    print(f"{p['file']}: {p['problem']}")
                print(f"{r['image']}{inside}: {len(r['problems'])} problem"
                      f"{'s' if len(r['problems']) != 1 else ''} found")
            else:
                print(f"{r['image']}{inside}: no problems found ({r['format']} {r['variant']})")
    return max((STATUS[r["status"]] for r in results), default=CLEAN)
