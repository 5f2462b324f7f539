"""Teaching the differences: the pitfalls catalogue, diff, and the side-by-side page.

Imports point down: ``teach`` uses ``check`` and ``formats``; nothing below imports it.
"""
