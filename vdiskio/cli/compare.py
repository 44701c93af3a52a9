"""`vdiskio compare A B`: exit 0 when the disks read the same, 1 when they differ (the
first differing offset is printed), 2 on an error; images or raw files."""

from ..errors import VdError
from .common import CliError, error_line


def cmd_compare(args):
    from ..compare import first_difference, open_disk
    from ..progress import Progress
    disks = []
    try:
        for path, fmt in ((args.a, args.a_format), (args.b, args.b_format)):
            try:
                disks.append(open_disk(path, fmt))
            except VdError as e:
                raise CliError(error_line(e), 2) from None
        a, b = disks
        with Progress(max(a.size, b.size), enabled=args.progress) as bar:
            try:
                where = first_difference(a, b, bar)
            except VdError as e:
                raise CliError(error_line(e), 2) from None
    finally:
        for d in disks:
            d.close()
    if a.size != b.size:
        print(f"Warning: image size mismatch: {a.path} {a.size} bytes, {b.path} {b.size}"
              f" bytes")
    if where is None:
        print("Images are identical.")
        return 0
    print(f"Content mismatch at offset {where}!")
    return 1
