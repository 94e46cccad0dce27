from .registry import FamilySpec, family_names, get_family, register

__all__ = ["FamilySpec", "family_names", "get_family", "register"]
