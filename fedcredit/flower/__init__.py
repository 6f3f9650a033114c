"""Thin Flower adapters: message codec, ServerApp and ClientApp. No protocol logic lives here."""
