"""fedcredit's network lab: a test bench for real federations, never part of a deployment.

* ``namespaces``: one Linux network namespace per party on a bridge (``Lab``), with delay and
  loss on a party's link (netem where the kernel has it, otherwise nftables drops plus
  ``delay_relay``);
* ``capture``: AF_PACKET capture of a party's link, TCP reassembly, TLS framing checks and the
  canary search over what crossed it;
* ``delay_relay``: a userspace TCP relay that holds each chunk for a fixed delay.

Tests and benchmarks import it; the product (``fedcredit``) never does — tests/test_layers.py
fails if it starts to. See docs/network-lab.md.
"""
