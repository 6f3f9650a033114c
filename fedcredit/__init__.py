"""fedcredit: privacy-preserving federated credit modeling for small and micro enterprises.

Tax bureau, utilities and bank nodes train one joint default-scoring model; raw
records never leave their node. See docs/ and ../shared/DESIGN.md for the design.
"""

__version__ = "0.1.0"
