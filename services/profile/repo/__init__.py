"""Profile repository: functions that take an AsyncSession; callers own transactions.

base      scoped lookups, consent rule, audit, keyset pages, transactions
parents   families, parents, consent records
children  children, avatars, XP
devices   pairing codes and devices
chat      conversations and messages
family    audit listing, export and erasure
"""
