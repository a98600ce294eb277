"""Which roles may do what. One table, read by the API permissions and the web pages."""

from accounts.models import Role

ANYONE_SIGNED_IN = frozenset(Role.values)
INGEST = frozenset({Role.APP, Role.ADMIN})
READ_PREDICTIONS = frozenset({Role.APP, Role.OPS, Role.ADMIN})
ANNOTATE = frozenset({Role.ANNOTATOR, Role.REVIEWER, Role.OPS, Role.ADMIN})
REVIEW = frozenset({Role.REVIEWER, Role.OPS, Role.ADMIN})
OBSERVE = frozenset({Role.OPS, Role.ADMIN})
MANAGE = frozenset({Role.OPS, Role.ADMIN})
# What a request whose role is not in the table's row is told (API views and gateways alike).
REFUSED = "Your role may not do this."
# Roles that can see a project's queue (listing tasks) without annotating it.
READ_TASKS = frozenset({Role.ANNOTATOR, Role.REVIEWER, Role.OPS, Role.ADMIN})
# The roles a project's member may be given from the project (admins see every project:
# they are made with flywheel_admin, not added to one).
MEMBER_ROLES = (Role.ANNOTATOR, Role.REVIEWER, Role.OPS, Role.APP)
