"""What every layer of fedcredit stands on, and nothing else.

* ``errors``: the error types users and every layer share (``FedCreditError``; ``ProtocolError``
  for a message that breaks a protocol);
* ``atomic``: file output that is whole or absent, never half written;
* ``wire``: the one message type that crosses a node boundary (header, payload, strict byte
  codec, bundling of binary parts, the coordinator's party name).

Modules here import nothing from fedcredit outside ``common``, so the audit log (which records
messages) and the protocols (which exchange them) both sit above them.
"""
