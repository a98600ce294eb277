"""Serializer pieces every API shares."""

from collections.abc import Mapping

from rest_framework import serializers

from common.policy import unknown_key_reason


class PolicySerializer(serializers.Serializer):
    """A serializer for a policy body that refuses keys it does not know: a typo such as
    {"routing": {"thresold": 0.3}} would otherwise be accepted and change nothing."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = {str(key): [unknown_key_reason(str(key), self.fields)] for key in data if key not in self.fields}
            if unknown:
                raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)
