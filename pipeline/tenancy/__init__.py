"""Tenant tagging: the device registry, pseudonyms for personal identifiers."""

from pipeline.tenancy.pseudonyms import Pseudonymizer
from pipeline.tenancy.registry import Registration, Registry, parse_registration
from pipeline.tenancy.tagging import tag_frame

__all__ = ["Pseudonymizer", "Registration", "Registry", "parse_registration", "tag_frame"]
