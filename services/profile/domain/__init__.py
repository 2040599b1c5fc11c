"""Profile's domain layer: plain Python, no gRPC and no protobuf.

    enums        the domain's enums (values mirror the proto enums; convert.py translates)
    rules        ages, consent scopes, text limits
    progression  XP, levels and evolution stages
    catalog      the avatar item catalog and outfit rules
    avatars      the avatar use cases: dress within the level, award XP once
    members      several parents: roles and who may do what, invites, join, leave, hand on
    export       the family export as records, read a page at a time
"""
