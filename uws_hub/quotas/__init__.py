"""Quotas: limits per user, usage measured in the background, and enforcement.

- :mod:`.limits`: :class:`Limits`, :class:`Reservation`, quota periods and units.
- :mod:`.service`: :class:`QuotaService`, checks, disk reservations, accounting.
"""
