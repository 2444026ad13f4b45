"""What the state machine's rules draw from: the starting domain, device targets and
documents, virsh flag sets, save images, address kinds, and the known desyncs of the
reference driver the rules can steer around."""

from __future__ import annotations

__all__ = [
    "ADDRESS_KINDS",
    "DISK_TARGETS",
    "DOMAIN",
    "DOMAIN_XML",
    "FLAG_SETS",
    "KNOWN_DESYNCS",
    "MIGRATE_FLAGS",
    "NIC_MACS",
    "OPEN_DESYNCS",
    "OTHER_DEVICES",
    "SAVE_IMAGES",
    "large_domain_xml",
]

DOMAIN = "testvm"
#: the domain every run starts from (no explicit addresses, so every CHV release takes it)
DOMAIN_XML = f"""<domain type='kvm'>
  <name>{DOMAIN}</name>
  <uuid>8f7e0f3c-6a51-4a1e-9d8b-3f0c2c1b5a01</uuid>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>/etc/CLOUDHV.fd</kernel>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/nfs/vda.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <mac address='52:54:00:00:00:01'/>
      <target dev='tap1' managed='no'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def large_domain_xml(extra: int) -> str:
    """The start domain with ``extra`` more disks, none with an address (vdf and on: the
    attach rules never touch them)."""
    disks = "".join(
        f"    <disk type='file' device='disk'>\n      <source file='/nfs/x{n}.img'/>\n"
        f"      <target dev='vd{chr(ord('f') + n)}' bus='virtio'/>\n    </disk>\n"
        for n in range(extra)
    )
    return DOMAIN_XML.replace("  </devices>", disks + "  </devices>")


DISK_TARGETS = ("vdb", "vdc", "vdd", "vde")
NIC_MACS = ("52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04")
#: virsh flag sets (never an exclusive pair: virsh rejects those before libvirt sees them)
FLAG_SETS = ("", "--live", "--config", "--live --config", "--persistent", "--current")
SAVE_IMAGES = ("img1", "img2")
#: ``virsh migrate`` flag sets; the CH driver migrates only with --live --p2p
MIGRATE_FLAGS = (
    "--live --p2p",
    "--live --p2p --persistent",
    "--live --p2p --persistent --undefinesource",
    "--live --p2p --undefinesource",
    "--p2p",
)
#: explicit address kinds of attach steps
ADDRESS_KINDS = (
    "none",
    "none",
    "slot",
    "taken",
    "out-of-range",
    "slot-zero",
    "function",
    "segment",
)

#: other device classes, attached with ``attach-device`` (user aliases make them findable)
OTHER_DEVICES: dict[str, str] = {
    "fs-share": (
        "<filesystem type='mount' accessmode='passthrough'>\n"
        "  <driver type='virtiofs'/>\n"
        "  <source socket='/run/virtiofsd-share.sock'/>\n"
        "  <target dir='share'/>\n"
        "  <alias name='ua-share'/>\n"
        "</filesystem>\n"
    ),
    "pmem0": (
        "<memory model='nvdimm'>\n"
        "  <source>\n"
        "    <path>/nfs/pmem0.img</path>\n"
        "  </source>\n"
        "  <target>\n"
        "    <size unit='KiB'>524288</size>\n"
        "  </target>\n"
        "  <alias name='ua-pmem0'/>\n"
        "</memory>\n"
    ),
    # CHV cannot hot-plug a balloon: config-only
    "balloon": "<memballoon model='virtio'>\n  <alias name='ua-balloon'/>\n</memballoon>\n",
    # nor a watchdog, which no release lets the driver place
    "watchdog": (
        "<watchdog model='i6300esb' action='reset'>\n  <alias name='ua-wd'/>\n</watchdog>\n"
    ),
}


#: desyncs of the reference driver this machine found; ``avoid`` steers around them
KNOWN_DESYNCS = {
    "restore-conflict": (
        "a save image restored after a config-only attach gave the same device another "
        "slot: live and persistent disagree after the restore (also for an image restored "
        "a second time)"
    ),
    "explicit-vs-twin": (
        "a live attach with an explicit address is accepted although the same device "
        "already has another address in the persistent definition (or the reverse)"
    ),
    "pending-eject-rebuild": (
        "after a detach timed out (the guest has not ejected), a reboot rebuilds CHV "
        "without the device while the live definition keeps it"
    ),
    "pending-eject-restore": (
        "after a detach timed out (the guest has not ejected), save + restore or "
        "managedsave + start gives a CHV without the device while the restored live "
        "definition keeps it"
    ),
    "pending-eject-migrate": (
        "after a detach timed out (the guest has not ejected), a migration gives the "
        "destination a CHV without the device while its live definition keeps it"
    ),
    "config-unaddressable": (
        "under a release that cannot place a class (v52: memballoon), a config-only attach "
        "leaves the device without an address although define gives it one"
    ),
    "unaddressable-vs-saved": (
        "under a release that cannot place a class (v52: memballoon), a config-only attach "
        "while a save image reserves a slot predicted a slot past the reservation, but CHV "
        "places the device itself at the lowest free slot on the next start"
    ),
    "unaddressable-prediction": (
        "under a release that cannot place a class (v52: memballoon), the slot the driver "
        "predicts at a config-only attach goes stale when a later config detach frees a "
        "lower slot: CHV places the device itself at the lowest free slot on the next start"
    ),
    "unpinnable-order": (
        "two devices CHV places itself (v52: a watchdog and a memballoon) attached "
        "config-only get predicted slots in another order than CHV creates them in"
    ),
    "unpinnable-repredict": (
        "while the domain runs (or a save image will restore it), a config detach below a "
        "device CHV places itself (v52: memballoon) re-predicts its persistent slot into "
        "the hole; the live definition keeps the slot CHV gave it, so live and persistent "
        "disagree"
    ),
    "unpinnable-reboot": (
        "a device CHV places itself (a watchdog, in every release) moves on reboot into a "
        "lower slot a live-only detach freed: CHV recomputes implicit slots"
    ),
}


#: the known desyncs the reference driver still has (the others are fixed and explored)
OPEN_DESYNCS = frozenset({"unpinnable-repredict", "unpinnable-reboot"})
