"""`vdiskio resize IMAGE SIZE`: grow VHD (fixed, dynamic) and VMDK (sparse, flat);
shrink with --shrink when the end holds no data."""

from .common import size_and_bytes


def cmd_resize(args):
    from ..resize import resize_image
    old, new = resize_image(args.image, args.size, args.shrink)
    if old == new:
        print(f"{args.image}: already {size_and_bytes(new)}")
    else:
        print(f"{args.image}: resized from {size_and_bytes(old)} to {size_and_bytes(new)}")
    return 0
