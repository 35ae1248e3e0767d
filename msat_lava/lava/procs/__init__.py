"""Lava processes of msat-lava (one package so Lava's model discovery finds models.py beside process.py)."""
