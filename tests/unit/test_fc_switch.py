"""Path choice and the order of errors on the fabric (no Ray)."""
import textwrap

import pytest

from san.elements.client_host import ClientHost
from san.elements.fc_switch import FcSwitch, Fabric
from san.errors import SanError
from san.topology import load_topology

MESH = """
name: mesh
fabric:
  switches:
    - {name: sw1, speed: 16GFC}
    - {name: sw2, speed: 16GFC}
    - {name: sw3, speed: 16GFC}
  isls:
    - {name: isl-a, a: sw1, b: sw2}
    - {name: isl-b, a: sw1, b: sw2}
    - {name: isl-c, a: sw2, b: sw3}
    - {name: isl-d, a: sw1, b: sw3}
  zones:
    - {name: z1, members: [h1/hba0, h1/hba1, a1/fc0]}
    - {name: z2, members: [h2/hba0, a1/fc1]}
arrays:
  - name: a1
    device_id: DEV-1
    ports:
      - {name: fc0, number: 0, wwpn: "50:00:00:00:00:00:00:01", switch: sw3}
      - {name: fc1, number: 1, wwpn: "50:00:00:00:00:00:00:02", switch: sw2}
      - {name: fc2, number: 2, wwpn: "50:00:00:00:00:00:00:03", switch: sw1}
    volumes:
      - {number: 0, size: 1MiB, port: fc0, lun: 0, hosts: [h1]}
hosts:
  - name: h1
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:00:01", switch: sw1}
      - {name: hba1, wwpn: "21:00:00:00:00:00:00:02", switch: sw3}
    mounts:
      - {mount_point: /d, port: a1/fc0, lun: 0}
  - name: h2
    hbas:
      - {name: hba0, wwpn: "21:00:00:00:00:00:00:03", switch: sw1}
    mounts:
      - {mount_point: /d, port: a1/fc0, lun: 0}
"""


@pytest.fixture
def topo(tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text(textwrap.dedent(MESH))
    return load_topology(path)


def code_of(fn, *args):
    with pytest.raises(SanError) as info:
        fn(*args)
    return info.value.code, str(info.value)


def test_direct_isl_is_the_fewest_hops(topo):
    route = Fabric(topo).route("h1/hba0", "a1/fc0")
    assert route.isls == (("isl-d", "tx"),)
    assert route.resources(True) == ("h1/hba0:tx", "isl-d:tx", "a1/fc0:rx")
    assert route.resources(False) == ("a1/fc0:tx", "isl-d:rx", "h1/hba0:rx")


def test_ties_are_broken_by_isl_name_and_dead_isls_are_avoided(topo):
    fabric = Fabric(topo)
    fabric.set_up("isl-d", False)
    assert fabric.route("h1/hba0", "a1/fc0").isls == (("isl-a", "tx"), ("isl-c", "tx"))
    fabric.set_up("isl-a", False)
    assert fabric.route("h1/hba0", "a1/fc0").isls == (("isl-b", "tx"), ("isl-c", "tx"))
    fabric.set_up("isl-a", True)
    fabric.set_up("isl-d", True)
    assert fabric.route("h1/hba0", "a1/fc0").hops == 1


def test_same_switch_needs_no_isl(topo):
    assert Fabric(topo).route("h1/hba1", "a1/fc0").isls == ()


# (what is down, initiator, target, expected code, words the message must name)
ERROR_ORDER = [
    ({"a1"}, "h1/hba0", "a1/fc0", "ELEMENT_DOWN", "a1 is down"),
    ({"a1", "h1/hba0", "isl-d"}, "h1/hba0", "a1/fc0", "ELEMENT_DOWN", "a1"),
    ({"sw3"}, "h1/hba0", "a1/fc0", "ELEMENT_DOWN", "switch sw3"),
    ({"sw1", "a1/fc0"}, "h1/hba0", "a1/fc0", "ELEMENT_DOWN", "switch sw1"),
    ({"h1/hba0"}, "h1/hba0", "a1/fc0", "LINK_DOWN", "link h1/hba0 is down"),
    ({"a1/fc0"}, "h1/hba0", "a1/fc0", "LINK_DOWN", "link a1/fc0 is down"),
    ({"isl-d", "isl-c"}, "h1/hba0", "a1/fc0", "LINK_DOWN", "no live path from sw1 to sw3"),
    ({"isl-d", "sw2"}, "h1/hba0", "a1/fc0", "LINK_DOWN", "no live path"),
    ({"isl-d", "isl-c"}, "h2/hba0", "a1/fc0", "LINK_DOWN", "no live path"),  # link before zoning
    (set(), "h2/hba0", "a1/fc0", "ZONING_DENIED", "h2/hba0 is not zoned with a1/fc0"),
    (set(), "h1/hba0", "a1/fc2", "ZONING_DENIED", "h1/hba0 is not zoned with a1/fc2"),
    (set(), "h1/hba0", "a1/fc9", "NO_SUCH_PORT", "a1/fc9"),
]


@pytest.mark.parametrize("down,initiator,target,code,words", ERROR_ORDER)
def test_first_failure_in_path_order(topo, down, initiator, target, code, words):
    fabric = Fabric(topo)
    for name in down:
        fabric.set_up(name, False)
    got, message = code_of(fabric.route, initiator, target)
    assert got == code
    assert words in message


def test_switch_grants_only_for_its_own_ports(topo):
    assert FcSwitch("sw1", topo).grant("h1/hba0", "a1/fc0").target == "a1/fc0"
    code, message = code_of(FcSwitch("sw2", topo).grant, "h1/hba0", "a1/fc0")
    assert code == "NO_SUCH_PORT" and "not plugged into switch sw2" in message


def host_and_grant(topo, down):
    fabric = Fabric(topo)
    for name in down:
        fabric.set_up(name, False)
    host = ClientHost(topo.hosts[0])
    return host, (lambda hba: fabric.route(hba, "a1/fc0"))


def test_host_uses_its_first_hba_with_a_path(topo):
    host, grant = host_and_grant(topo, set())
    assert host.first_granted(grant).initiator == "h1/hba0"


def test_host_fails_over_to_its_second_hba(topo):
    host, grant = host_and_grant(topo, {"h1/hba0"})
    assert host.first_granted(grant).initiator == "h1/hba1"


def test_a_failure_says_whether_its_pair_is_zoned_even_across_ray(topo):
    import pickle
    fabric = Fabric(topo)
    fabric.set_up("h1/hba0", False)
    code, _ = code_of(fabric.route, "h1/hba0", "a1/fc0")
    try:
        fabric.route("h1/hba0", "a1/fc0")
    except SanError as exc:
        assert code == "LINK_DOWN" and pickle.loads(pickle.dumps(exc)).zoned is True


def test_host_reports_the_first_hbas_failure_when_none_has_a_path(topo):
    host, grant = host_and_grant(topo, {"h1/hba0", "h1/hba1"})
    code, message = code_of(host.first_granted, grant)
    assert code == "LINK_DOWN" and "h1/hba0" in message


@pytest.mark.parametrize("failures, reported", [
    ([("LINK_DOWN", True), ("LINK_DOWN", True)], 0),
    ([("ZONING_DENIED", False), ("LINK_DOWN", True)], 1),   # hba0 was never a path to it
    ([("ZONING_DENIED", False), ("ZONING_DENIED", False)], 0),   # none zoned: the first
    ([("LINK_DOWN", True), ("ZONING_DENIED", False)], 0),
    ([("ZONING_DENIED", False), ("LINK_DOWN", False)], 0),  # down, but not zoned either
    ([("ZONING_DENIED", False), ("ELEMENT_DOWN", True), ("LINK_DOWN", True)], 1),
    ([("NO_SUCH_PORT", None), ("LINK_DOWN", True)], 0),     # (no zoning said: a path)
], ids=["both-down", "zoned-one-down", "none-zoned", "first-down", "unzoned-down",
        "array-down", "unknown-port"])
def test_the_failure_reported_is_the_first_of_a_port_that_could_be_a_path(failures, reported):
    from san.elements.client_host import first_granted
    errors = []
    for i, (code, zoned) in enumerate(failures):
        errors.append(SanError(code, f"port {i}: {code}"))
        if zoned is not None:
            errors[-1].zoned = zoned

    def grant(i):
        raise errors[i]
    with pytest.raises(SanError) as info:
        first_granted(range(len(errors)), grant, "h1")
    assert info.value is errors[reported]


def test_unknown_mount_is_no_such_mount(topo):
    code, message = code_of(ClientHost(topo.hosts[0]).mount, "/nope")
    assert code == "NO_SUCH_MOUNT" and "'/nope'" in message and "/d" in message
