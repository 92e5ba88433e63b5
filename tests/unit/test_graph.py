"""`san graph`: every shipped topology and scenario drawn as PNG, SVG and DOT with every
element, link speed and zone in it; placement shown; bad input refused in one line (exit 2);
no overlaps in the layout; neither Ray nor (for `san validate`) matplotlib imported."""
from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from san import cli
from san.graph import graph_bytes, san_graph
from san.graph.layout import layout
from san.graph.model import UNZONED_COLOR, ZONE_COLORS
from san.topology import is_scenario_file, load_scenario, load_topology
from san.units import format_speed

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"
SHIPPED = sorted(TOPOLOGIES.glob("*.yaml")) + sorted((TOPOLOGIES / "scenarios").glob("*.yaml"))
FORMATS = (".png", ".svg", ".dot")


def _topology(path: Path):
    return load_scenario(path).topology if is_scenario_file(path) else load_topology(path)


def _names(topology) -> list[str]:
    """Every element's name, ISLs included."""
    return [e.name for e in (*topology.fabric.switches, *topology.fabric.isls, *topology.arrays,
                             *topology.hosts, *topology.backup_servers, *topology.tape_libraries)]


def _link_labels(topology) -> list[str]:
    """'hba0 · 8GFC' of every FC link, at the lower of port and switch speed, worked out here
    independently of san.graph; 'isl1 · 16GFC' of every ISL, at the lower of its speed and
    its two switches' (as modeled time runs it)."""
    switch = {s.name: s.speed for s in topology.fabric.switches}
    ports = [p for a in topology.arrays for p in a.ports] + [h for x in topology.hosts for h in x.hbas]
    labels = [f"{p.name} · {format_speed(min(p.speed, switch[p.switch]))}" for p in ports]
    return labels + [f"{i.name} · {format_speed(min(i.speed, switch[i.a], switch[i.b]))}"
                     for i in topology.fabric.isls]


def _svg_texts(data: bytes) -> list[str]:
    root = ET.fromstring(data)
    return [e.text for e in root.iter() if e.tag.endswith("text") and e.text]


def _draw(tmp_path, source: Path, suffix: str) -> bytes:
    out = tmp_path / f"{source.stem}{suffix}"
    assert cli.main(["graph", str(source), "-o", str(out)]) == 0
    return out.read_bytes()


def _check_dot(text: str) -> None:
    """Plausible Graphviz: one (di)graph, braces and quotes balanced outside strings."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    assert re.match(r"\s*(strict\s+)?(di)?graph\s+\"[^\"]*\"\s*\{", body), body[:80]
    plain = re.sub(r'"(\\.|[^"\\])*"', '""', body)          # strings out of the way
    plain = re.sub(r"<(?:[^<>]|<[^<>]*>)*>", "<>", plain)       # and HTML-like labels
    assert plain.count("{") == plain.count("}") and plain.rstrip().endswith("}")
    assert plain.count("[") == plain.count("]")
    assert '"' not in plain.replace('""', "")


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("source", SHIPPED, ids=[str(p.relative_to(TOPOLOGIES)) for p in SHIPPED])
def test_every_shipped_file_draws_with_every_element_and_link(tmp_path, source, suffix):
    topology = _topology(source)
    data = _draw(tmp_path, source, suffix)
    assert data
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        return
    if suffix == ".svg":
        texts = _svg_texts(data)
        shown = "\n".join(texts)
        # a box's name is a text of its own; an ISL's name starts its label, checked below
        assert [n for n in _names(topology) if n not in texts
                and not any(t.startswith(f"{n} · ") for t in texts)] == []
        isls = {i.name for i in topology.fabric.isls}
        assert [n for n in _names(topology) if n not in isls
                and f'<g id="{n}"'.encode() not in data] == []
    else:
        shown = data.decode("utf-8")
        _check_dot(shown)
        isls = {i.name for i in topology.fabric.isls}
        assert [n for n in _names(topology) if n not in isls and f'"{n}" [' not in shown] == []
        ports = [f"{a.name}/{p.name}" for a in topology.arrays for p in a.ports] + \
            [f"{h.name}/{b.name}" for h in topology.hosts for b in h.hbas]
        assert [p for p in ports if f'tooltip="{p}:' not in shown] == []
    assert [label for label in _link_labels(topology) if label not in shown] == []
    assert [z.name for z in topology.fabric.zones if f"{z.name}: " not in shown] == []


INLINE = """\
name: inline
lan: {speed: 1GbE}
fabric:
  switches:
    - {name: sw1, speed: 8GFC, placement: {resources: {site_b: 0.01}}}
  zones:
    - {name: db, members: [host1/hba0, array1/fc0]}
    - {name: both, members: [host1/hba0, array1/fc0, array1/fc1]}
arrays:
  - name: array1
    device_id: DEV-1
    placement: {resources: {site_a: 1}}
    ports:
      - {name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:00:01", switch: sw1, speed: 16GFC}
      - {name: fc1, number: 1, wwpn: "50:06:0e:80:00:00:00:02", switch: sw1, speed: 4GFC}
      - {name: fc2, number: 2, wwpn: "50:06:0e:80:00:00:00:03", switch: sw1}
    volumes:
      - {number: 0, size: 1GiB, port: fc0, lun: 0, hosts: [host1]}
hosts:
  - name: host1
    placement: {resources: {site_a: 1}}
    hbas:
      - {name: hba0, wwpn: "21:00:00:e0:8b:00:00:01", switch: sw1, speed: 16GFC}
    mounts:
      - {mount_point: /db, port: array1/fc0, lun: 0}
      - {mount_point: /masked, port: array1/fc0, lun: 1}
"""


@pytest.fixture
def inline(tmp_path) -> Path:
    path = tmp_path / "inline.yaml"
    path.write_text(INLINE)
    return path


# what the inline topology's picture must tell, in every format
INLINE_FACTS = [
    "@site_a",              # placement: host1 and array1
    "@site_b=0.01",         # an amount other than 1 is shown
    "hba0 · 8GFC",          # a 16GFC HBA on an 8GFC switch runs at 8GFC
    "fc0 · 8GFC",
    "fc1 · 4GFC",           # a 4GFC port on an 8GFC switch runs at 4GFC
    "fc2 · 8GFC",           # speed defaults to the switch's; in no zone, still drawn
    "db: host1/hba0, array1/fc0",
    "both: host1/hba0, array1/fc0, array1/fc1",
    "✗ no such LUN",        # the /masked mount's path is denied
]


@pytest.mark.parametrize("suffix", [".svg", ".dot"])
@pytest.mark.parametrize("fact", INLINE_FACTS)
def test_placement_speeds_zones_and_denied_paths_are_shown(tmp_path, inline, suffix, fact):
    data = _draw(tmp_path, inline, suffix)
    shown = "\n".join(_svg_texts(data)) if suffix == ".svg" else data.decode("utf-8")
    assert fact in shown


def test_a_port_in_two_zones_draws_a_line_per_zone(inline):
    scene = layout(san_graph(load_topology(inline)))
    colors = {line.color for line in scene.lines}
    assert {ZONE_COLORS[0], ZONE_COLORS[1], UNZONED_COLOR} <= colors
    dot = graph_bytes(load_topology(inline), ".dot").decode()
    assert f'color="{ZONE_COLORS[0]}:{ZONE_COLORS[1]}"' in dot     # host1/hba0: db and both


# each case: (id, the -o value given tmp_path, the one stderr line expected)
REFUSED_OUTPUTS = [
    ("jpg", lambda t: f"{t}/pic.jpg",
     "INVALID_INPUT: -o {t}/pic.jpg: unknown extension '.jpg' (expected one of: .png, .svg, .dot)"),
    ("no-extension", lambda t: f"{t}/pic",
     "INVALID_INPUT: -o {t}/pic: unknown extension '' (expected one of: .png, .svg, .dot)"),
    ("double", lambda t: f"{t}/pic.png.gz",
     "INVALID_INPUT: -o {t}/pic.png.gz: unknown extension '.gz' (expected one of: .png, .svg, .dot)"),
    ("folder-missing", lambda t: f"{t}/nope/pic.png",
     "INVALID_INPUT: -o {t}/nope/pic.png cannot be written: No such file or directory"),
    ("a-folder", lambda t: f"{t}/dir.svg",
     "INVALID_INPUT: -o {t}/dir.svg cannot be written: Is a directory"),
    ("under-a-file", lambda t: f"{t}/f/pic.dot",
     "INVALID_INPUT: -o {t}/f/pic.dot cannot be written: Not a directory"),
]


@pytest.mark.parametrize("out,expected", [c[1:] for c in REFUSED_OUTPUTS],
                         ids=[c[0] for c in REFUSED_OUTPUTS])
def test_a_bad_output_is_refused_in_one_line(tmp_path, capsys, out, expected):
    (tmp_path / "dir.svg").mkdir()
    (tmp_path / "f").write_text("a regular file\n")
    before = sorted(tmp_path.rglob("*"))
    assert cli.main(["graph", str(TOPOLOGIES / "two-arrays.yaml"), "-o", out(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [expected.format(t=tmp_path)]
    assert captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name,text,located", [
    ("topology", "name: x\nfabric: {switches: [{name: s1, speed: 3 furlongs}]}\n",
     "bad.yaml:2:39: fabric.switches[0].speed: invalid speed"),
    ("scenario", "name: s\ntopology: ../nope.yaml\nsteps: [{op: fly}]\n", "bad.yaml:2:"),
    ("not-yaml", "name: [unclosed\n", "bad.yaml:"),
])
def test_an_invalid_file_prints_its_located_problems_and_exits_2(tmp_path, capsys, name, text,
                                                                  located):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = tmp_path / "pic.png"
    assert cli.main(["graph", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert located in err and "Traceback" not in err
    assert not out.exists()


def test_uppercase_extension_is_accepted(tmp_path):
    out = tmp_path / "pic.SVG"
    assert cli.main(["graph", str(TOPOLOGIES / "two-arrays.yaml"), "-o", str(out)]) == 0
    assert "array1" in _svg_texts(out.read_bytes())


def test_the_same_topology_gives_the_same_svg_and_dot():
    topology = load_topology(TOPOLOGIES / "two-switches.yaml")
    for suffix in (".svg", ".dot"):
        assert graph_bytes(topology, suffix) == graph_bytes(topology, suffix)


def _overlap(a, b, slack=0.005) -> bool:
    return a[0] < b[2] - slack and b[0] < a[2] - slack and a[1] < b[3] - slack and b[1] < a[3] - slack


@pytest.mark.parametrize("source", sorted(TOPOLOGIES.glob("*.yaml")),
                         ids=[p.name for p in sorted(TOPOLOGIES.glob("*.yaml"))])
def test_the_layout_of_every_shipped_topology_is_clean(source):
    """No two texts overlap, no text runs into a box other than its own, and everything
    lies inside the picture (measured with the drawing's own font metrics)."""
    from san.graph.draw import measure            # matplotlib's metrics, as drawn
    scene = layout(san_graph(load_topology(source)), measure)
    texts = scene.texts
    clashes = [(a.text, b.text) for i, a in enumerate(texts) for b in texts[i + 1:]
               if _overlap(a.extent, b.extent)]
    assert clashes == []
    boxes = [(r.name, (r.x, r.y, r.x + r.w, r.y + r.h)) for r in scene.rects]
    intrusions = [(t.text, name) for t in texts for name, box in boxes
                  if t.owner != name and _overlap(t.extent, box)]
    assert intrusions == []
    outside = [t.text for t in texts if t.extent[0] < 0 or t.extent[1] < 0
               or t.extent[2] > scene.width or t.extent[3] > scene.height]
    assert outside == []
    # a box's own text stays inside it
    spill = [(t.text, t.owner) for t in texts if t.owner for name, box in boxes
             if name == t.owner and not (box[0] <= t.extent[0] and t.extent[2] <= box[2]
                                         and box[1] <= t.extent[1] and t.extent[3] <= box[3])]
    assert spill == []
    rects = [b for _, b in boxes]
    assert [(i, j) for i in range(len(rects)) for j in range(i + 1, len(rects))
            if _overlap(rects[i], rects[j])] == []


def test_graph_imports_no_ray_and_validate_no_matplotlib(tmp_path):
    code = ("import sys\n"
            "from san import cli\n"
            "assert cli.main(['validate', sys.argv[1]]) == 0\n"
            "assert 'matplotlib' not in sys.modules, 'validate imported matplotlib'\n"
            "assert cli.main(['graph', sys.argv[1], '-o', sys.argv[2]]) == 0\n"
            "assert 'matplotlib' in sys.modules\n"
            "assert 'ray' not in sys.modules, 'graph imported ray'\n")
    out = tmp_path / "pic.png"
    done = subprocess.run([sys.executable, "-c", code, str(TOPOLOGIES / "two-switches.yaml"),
                           str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["two-switches.png", "two-arrays.png"])
def test_the_example_pictures_in_the_docs_are_there_and_small(name):
    path = ROOT / "docs" / "img" / name
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size < 150_000
    assert f"(img/{name})" in (ROOT / "docs" / "graph.md").read_text()


ODD = """\
name: odd
lan: {speed: 100 MB/s}
fabric:
  switches:
    - {name: sw1, speed: 4GFC}
    - {name: sw2, speed: 4GFC}
  isls:
    - {name: isl1, a: sw1, b: sw2, speed: 16GFC}
  zones:
    - {name: z, members: [host1/hba0, array1/fc0]}
arrays:
  - name: array1
    device_id: DEV-1
    copy_speed: 800 MB/s
    ports:
      - {name: fc0, number: 0, wwpn: "50:06:0e:80:00:00:00:01", switch: sw2}
    volumes:
      - {number: 0, size: 1GiB, port: fc0, lun: 0, hosts: [host1]}
hosts:
  - name: host1
    hbas:
      - {name: hba0, wwpn: "21:00:00:e0:8b:00:00:01", switch: sw1}
    mounts:
      - {mount_point: "/a\\x01b", port: array1/fc0, lun: 0}
backup_servers:
  - {name: backup1, tape_library: lib1}
tape_libraries:
  - {name: lib1, drives: 2, drive_speed: 400MB/s, media: [T00001]}
"""


@pytest.mark.parametrize("fact", [
    "isl1 · 4GFC",              # a 16GFC ISL between 4GFC switches runs at 4GFC
    "2 drives · 400 MB/s",      # a tape drive's speed is no FC speed, even at 4GFC's rate
    "LAN · 100 MB/s",           # nor the LAN's
    "/a\\x01b → array1/fc0 LUN 0",   # a control character, written as its escape
])
def test_speeds_as_modeled_and_a_mount_point_that_does_not_print(tmp_path, fact):
    path = tmp_path / "odd.yaml"
    path.write_text(ODD)
    data = _draw(tmp_path, path, ".svg")           # well-formed XML (_svg_texts parses it)
    assert fact in _svg_texts(data)
