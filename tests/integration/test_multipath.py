"""Multipath on the Ray actors: a host with two HBAs on two switches keeps writing when its
preferred HBA goes down mid-transfer (the SAN tells the host actor, which moves the chunks not
yet acknowledged to the other path, in order; the array applies each WRITE once), every byte
reads back, each route is charged what it carried, and the next write after the link comes
back uses the preferred HBA again."""
import textwrap

from san.runner import Runner
from san.topology import load_scenario
from san.units import MiB
from tests.unit.test_multipath import topology_file

CHUNK = 4 * MiB


def test_a_write_moves_to_the_other_hba_when_the_first_goes_down_midway(build_san, tmp_path):
    (tmp_path / "s.yaml").write_text(f"name: mp\ntopology: {topology_file(tmp_path)}\nsteps:\n"
                                     + textwrap.indent(textwrap.dedent("""
        - op: concurrent
          steps:
            - {op: write, title: load, host: host1, mount: /db, offset: 0, size: 64MiB, seed: 5}
            - {op: fault, kind: link_down, target: host1/hba0, when: {step: load, after: 16MiB}}
    """), "  "))
    sc = load_scenario(tmp_path / "s.yaml")
    san = build_san(sc.topology, chunk_size=CHUNK)
    runner = Runner(san, tmp_path / "state")
    reports = runner.run(sc.steps)
    assert reports[0].ok, [(c.title, c.error) for c in reports[0].children]
    write, fault = reports[0].children
    assert write.bytes == 64 * MiB
    assert fault.result["after_bytes"] == 16 * MiB and not fault.result["step_ended"]
    links = {res: int(n) for res, (n, _) in runner.link_use.items() if n}
    assert links == {"host1/hba0:tx": 16 * MiB, "host1/hba1:tx": 48 * MiB, "isl1:rx": 48 * MiB,
                     "array1/fc0:rx": 64 * MiB}
    assert san.call("host1", "read_compare", "/db", 0, 64 * MiB, 5)["first_mismatch"] is None
    san.set_link("host1/hba0", True)
    back = san.call("host1", "write", "/db", 64 * MiB, 8 * MiB, 6)
    assert [t.resources for t in back] == [("host1/hba0:tx", "array1/fc0:rx")]
    assert san.call("host1", "read_compare", "/db", 64 * MiB, 8 * MiB, 6)["first_mismatch"] is None
