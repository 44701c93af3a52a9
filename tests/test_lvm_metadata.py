"""lvm2's config syntax and the VG model, on texts written the way lvm2 writes them
(the real texts lvm2 writes are read in test_lvm.py), and link names."""

import pytest

from vdiskio.errors import CorruptImage
from vdiskio.lvm import config
from vdiskio.lvm.metadata import parse_vg, valid_name, valid_uuid
from vdiskio.lvm.names import dm_name, link_name, parse_link_name, split_dm_name


def parse(text):
    return config.parse(text, "test")


def test_sections_values_and_comments():
    root = parse('# comment\nvg {\n  a = 1 # trailing\n  b = "x # not a comment"\n'
                 '  c = [ "p", 2, -3, +4, 1.5, .5 ]\n  d = []\n  e = ["a" "b"]\n'
                 '  inner { f = bare }\n}\ntop = 0\n')
    vg = root["vg"]
    assert list(root) == ["vg", "top"] and root["top"] == 0
    assert vg["a"] == 1 and vg["b"] == "x # not a comment"
    assert vg["c"] == ["p", 2, -3, 4, 1.5, 0.5]
    assert vg["d"] == [] and vg["e"] == ["a", "b"]
    assert vg["inner"]["f"] == "bare" and vg["inner"].name == "inner" and vg["inner"].line == 8


def test_strings_escape_as_libdm_does():
    root = parse(r'''a = "q\"uote"
b = "back\\slash"
c = "other\escape"
d = 'single \" stays'
"quoted name" = 1
e = "end\\"
''')
    assert root["a"] == 'q"uote'
    assert root["b"] == "back\\slash"
    assert root["c"] == "other\\escape"
    assert root["d"] == 'single \\" stays'
    assert root["quoted name"] == 1
    assert root["e"] == "end\\"


@pytest.mark.parametrize("text, expect", [
    ("a = 2\na = 2\n", "line 3: 'a' appears twice"),
    ("s { x = 1 }\ns { y = 2 }\n", "'s' appears twice"),
    ('a = "open\n', "unterminated string"),
    ("a = 'open\n", "unterminated string"),
    ("s { a = 1\n", "section 's' is not closed"),
    ("a = 007\n", "'007' is not a number"),
    ("a = 12345678901234567890\n", "is not a number"),
    ("a = 9223372036854775808\n", "is not a number"),
    ("a = -\n", "'-' is not a number"),
    ("a = 1.2.3\n", "expected '=' or '{'"),
    ("a 1\n", "expected '=' or '{' after 'a'"),
    ("= 1\n", "expected a name"),
    ("a = ]\n", "expected a value"),
    ("a = [1, 2\n", "expected a value"),
    ("}\n", "expected a name"),
])
def test_syntax_errors_name_the_line(text, expect):
    with pytest.raises(CorruptImage) as e:
        parse("ok = 1\n" + text)
    assert expect in str(e.value) and str(e.value).startswith("test: metadata line "), \
        str(e.value)


def test_limits():
    deep = "".join(f"s{i} {{\n" for i in range(config.MAX_DEPTH)) + "a = 1\n" + \
        "}\n" * config.MAX_DEPTH
    assert parse(deep)
    too_deep = "x {\n" + deep + "}\n"
    with pytest.raises(CorruptImage, match="nested deeper than 32"):
        parse(too_deep)
    with pytest.raises(CorruptImage, match="array longer than"):
        parse("a = [" + "1," * (config.MAX_ARRAY + 1) + "]\n")
    assert parse("n = -9223372036854775808\n")["n"] == -(1 << 63)


def test_node_count_bounded(monkeypatch):
    monkeypatch.setattr(config, "MAX_NODES", 10)
    with pytest.raises(CorruptImage, match="more than 10 values"):
        parse("".join(f"k{i} = {i}\n" for i in range(11)))


# --- the VG model -----------------------------------------------------------------------

UUIDS = iter(f"{i:06d}-aaaa-bbbb-cccc-dddd-eeee-{i:06d}" for i in range(1, 1000))


def lv_text(name, segments, status='"READ", "WRITE", "VISIBLE"'):
    body = "".join(f"segment{i} {{\n{seg}}}\n" for i, seg in enumerate(segments, 1))
    return (f'{name} {{\nid = "{next(UUIDS)}"\nstatus = [{status}]\nflags = []\n'
            f"segment_count = {len(segments)}\n{body}}}\n")


def linear(start, count, pv="pv0", pe=0):
    return (f'start_extent = {start}\nextent_count = {count}\ntype = "striped"\n'
            f'stripe_count = 1\nstripes = [\n"{pv}", {pe}\n]\n')


def typed(start, count, kind, extra=""):
    return f'start_extent = {start}\nextent_count = {count}\ntype = "{kind}"\n{extra}'


def vg_text(lvs, pvs=None, status='"RESIZEABLE", "READ", "WRITE"', name="vg"):
    pvs = pvs if pvs is not None else [("pv0", 100, "[]")]
    pv_part = "".join(f'{key} {{\nid = "{next(UUIDS)}"\ndevice = "/dev/x"\nstatus = '
                      f'["ALLOCATABLE"]\nflags = {flags}\ndev_size = 1000000\npe_start = 2048\n'
                      f"pe_count = {count}\n}}\n" for key, count, flags in pvs)
    return (f'{name} {{\nid = "{next(UUIDS)}"\nseqno = 7\nformat = "lvm2"\nstatus = [{status}]\n'
            f"flags = []\nextent_size = 8192\nmax_lv = 0\nmax_pv = 0\nmetadata_copies = 0\n"
            f"physical_volumes {{\n{pv_part}}}\nlogical_volumes {{\n{''.join(lvs)}}}\n}}\n"
            f'contents = "Text Format Volume Group"\nversion = 1\ndescription = ""\n')


def test_segments_sorted_and_types_listed():
    vg = parse_vg(vg_text([lv_text("a", [linear(2, 3, pe=10), linear(0, 2, pe=40)]),
                           lv_text("b", ['start_extent = 0\nextent_count = 4\ntype = "striped"\n'
                                         'stripe_count = 2\nstripe_size = 128\n'
                                         'stripes = [\n"pv0", 0\n"pv1", 0\n]\n'])],
                          pvs=[("pv0", 100, "[]"), ("pv1", 100, "[]")]), "t")
    a, b = vg.lvs["a"], vg.lvs["b"]
    assert [s.start for s in a.segments] == [0, 2] and a.extents == 5
    assert a.types() == ["linear"] and b.types() == ["striped"]
    assert a.refused is None and a.read_only is None
    assert vg.extent_bytes == 8192 * 512 and vg.seqno == 7


@pytest.mark.parametrize("kind", ["thin", "thin-pool", "raid1", "raid5_ls", "mirror",
                                  "cache", "cache-pool", "vdo", "vdo-pool", "integrity",
                                  "writecache", "zero", "error"])
def test_other_segment_types_are_refused_by_name(kind):
    vg = parse_vg(vg_text([lv_text("x", [linear(0, 2), typed(2, 2, kind)])]), "t")
    lv = vg.lvs["x"]
    assert lv.refused == f"segment type {kind} is not supported (only linear and striped)"
    assert lv.types() == ["linear", kind]


def test_read_only_and_hidden_and_stacked_volumes():
    vg = parse_vg(vg_text([
        lv_text("ro", [linear(0, 1)], status='"READ", "VISIBLE"'),
        lv_text("hidden", [linear(0, 1, pe=1)], status='"READ", "WRITE"'),
        lv_text("stacked", [linear(0, 1, pv="hidden", pe=0)]),
    ]), "t")
    assert vg.lvs["ro"].read_only == "the volume is read-only (lvchange -p r)"
    assert not vg.lvs["hidden"].visible and vg.lvs["hidden"].refused is None
    assert "stacked on volume hidden" in vg.lvs["stacked"].refused
    whole_ro = parse_vg(vg_text([lv_text("a", [linear(0, 1)])], status='"READ"'), "t")
    assert whole_ro.lvs["a"].read_only == "volume group vg is read-only"


def test_volume_on_a_missing_pv_is_refused():
    vg = parse_vg(vg_text([lv_text("a", [linear(0, 1)])], pvs=[("pv0", 10, '["MISSING"]')]), "t")
    assert "marked MISSING" in vg.lvs["a"].refused


@pytest.mark.parametrize("change, expect", [
    (lambda t: t.replace("extent_size = 8192", "extent_size = 0"), "extent_size = 0"),
    (lambda t: t.replace('"Text Format Volume Group"', '"Something"'), "contents is not"),
    (lambda t: t.replace("version = 1", "version = 2"), "version 2 is not 1"),
    (lambda t: t.replace("vg {", "v/g {", 1), "not a valid volume group name"),
    (lambda t: t.replace("a {", "-a {", 1), "not a valid logical volume name"),
    (lambda t: t.replace("segment_count = 1", "segment_count = 2"), "segment_count is 2"),
    (lambda t: t.replace("stripe_count = 1", "stripe_count = 2"), "stripe_size is missing"),
    (lambda t: t.replace("stripe_count = 1", "stripe_count = 2\nstripe_size = 64"),
     "extent_count 1 is not a multiple of its 2 stripes"),
    (lambda t: t.replace("extent_count = 1", "extent_count = 2").replace(
        "stripe_count = 1", "stripe_count = 2\nstripe_size = 3"), "not a power of two"),
    (lambda t: t.replace("extent_count = 1", "extent_count = 2").replace(
        "stripe_count = 1", "stripe_count = 2\nstripe_size = 64"), "stripes lists 2 items"),
    (lambda t: t.replace('"pv0", 0', '"pv0", -1'), "not a volume name and a start extent"),
    (lambda t: t.replace("seqno = 7", 'seqno = "7"'), "seqno is not an integer"),
    (lambda t: t + "other { }\n", "2 volume group sections"),
])
def test_model_errors(change, expect):
    good = vg_text([lv_text("a", [linear(0, 1)])])
    assert parse_vg(good, "t")
    with pytest.raises(CorruptImage) as e:
        parse_vg(change(good), "t")
    assert expect in str(e.value), str(e.value)


def test_names_and_uuids():
    assert valid_name("vg_root-1.+x") and not valid_name("-a") and not valid_name("..")
    assert not valid_name("a/b") and not valid_name("a b") and not valid_name("x" * 128)
    assert valid_uuid("aJEutp-0WEE-34I7-hora-CzuW-oAV9-ZlKKJ2")
    assert not valid_uuid("aJEutp-0WEE-34I7-hora-CzuW-oAV9-ZlKKJ") and not valid_uuid("x")


def test_device_mapper_names():
    assert dm_name("vg-data", "lv-1") == "vg--data-lv--1"
    assert dm_name("centos", "root") == "centos-root"
    assert split_dm_name("vg--data-lv--1") == ("vg-data", "lv-1")
    assert split_dm_name("a---b") == ("a-", "b")
    for bad in ("novolume", "a-b-c", "-a-b", "a-", "a-b/c"):
        assert split_dm_name(bad) is None, bad
    assert link_name("disk.vmdk", "my-vg", "root") == "disk.vmdk-my--vg-root"
    assert parse_link_name("centos.vmdk-centos-root") == [("centos.vmdk", "centos", "root")]
    assert parse_link_name("A.VHDX-vg-lv") == [("A.VHDX", "vg", "lv")]
    assert parse_link_name("d.vhd-data.vhd-lv") == [("d.vhd", "data.vhd", "lv")]
    assert parse_link_name("disk.vhd1") == [] and parse_link_name("disk.vhd-1") == []
    assert parse_link_name(".vhd-vg-lv") == []
