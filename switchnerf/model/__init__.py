"""The Switch-NeRF++ field."""

from switchnerf.model.field import FieldOutput, SwitchField

__all__ = ["FieldOutput", "SwitchField"]
