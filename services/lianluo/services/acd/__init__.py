"""The ACD: agent presence and capacity, waiting contacts, offers and routing decisions."""
