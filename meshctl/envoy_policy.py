"""Envoy policy pieces: RBAC from the topology's matrix, rate limits, and retries.

RBAC is deny-by-default: the filter ALLOWs what a policy names (health and reflection for any
mesh identity, and each rule of the matrix), and Envoy answers anything else with
``PERMISSION_DENIED``. Rate limits are token buckets answered with ``RESOURCE_EXHAUSTED``.
Retries move to another host and another priority, so one dead instance costs no call.
"""

from __future__ import annotations

import datetime as dt
import re

import betterproto2
from envoy_data_plane.envoy.config.core.v3 import (
    RuntimeFractionalPercent,
)
from envoy_data_plane.envoy.config.rbac.v3 import (
    Permission,
    PermissionSet,
    Policy,
    Principal,
    PrincipalAuthenticated,
    RbacAction,
)
from envoy_data_plane.envoy.config.rbac.v3 import Rbac as RbacRules
from envoy_data_plane.envoy.config.route.v3 import (
    RetryPolicy,
    RetryPolicyRetryHostPredicate,
    RetryPolicyRetryPriority,
)
from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
from envoy_data_plane.envoy.extensions.filters.http.rbac.v3 import Rbac
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import PreviousHostsPredicate
from envoy_data_plane.envoy.extensions.retry.priority.previous_priorities.v3 import (
    PreviousPrioritiesConfig,
)
from envoy_data_plane.envoy.type.matcher.v3 import PathMatcher, RegexMatcher, StringMatcher
from envoy_data_plane.envoy.type.v3 import (
    FractionalPercent,
    FractionalPercentDenominatorType,
    TokenBucket,
)
from envoy_data_plane.google.protobuf import Any as AnyProto

from meshctl.topology import RateLimit, Topology

RETRY_ON = "connect-failure,refused-stream,reset,unavailable"


def typed(message: betterproto2.Message) -> AnyProto:
    """``message`` packed for a ``typed_config`` field."""
    return AnyProto.pack(message)


def _percent_100() -> RuntimeFractionalPercent:
    return RuntimeFractionalPercent(
        default_value=FractionalPercent(
            numerator=100, denominator=FractionalPercentDenominatorType.HUNDRED
        ),
        runtime_key="hvac.ratelimit",
    )


def rate_limit(limit: RateLimit, stat_prefix: str) -> LocalRateLimit:
    return LocalRateLimit(
        stat_prefix=stat_prefix,
        token_bucket=TokenBucket(
            max_tokens=limit.burst,
            tokens_per_fill=limit.per_second,
            fill_interval=dt.timedelta(seconds=1),
        ),
        filter_enabled=_percent_100(),
        filter_enforced=_percent_100(),
        rate_limited_as_resource_exhausted=True,
    )


def regex_principal(pattern: str) -> Principal:
    return Principal(
        authenticated=PrincipalAuthenticated(
            principal_name=StringMatcher(safe_regex=RegexMatcher(regex=pattern))
        )
    )


def _path_prefix(prefix: str) -> Permission:
    return Permission(url_path=PathMatcher(path=StringMatcher(prefix=prefix)))


def _path_exact(path: str) -> Permission:
    return Permission(url_path=PathMatcher(path=StringMatcher(exact=path)))


def ingress_rbac(topology: Topology) -> RbacRules:
    """ALLOW policies from the matrix; a request no policy allows is denied."""
    domain = re.escape(f"spiffe://{topology.trust_domain}/") + ".+"
    policies = {
        "health-and-reflection": Policy(
            permissions=[_path_prefix(f"/{name}/") for name in topology.open_services],
            principals=[regex_principal(domain)],
        )
    }
    for index, rule in enumerate(topology.rules):
        spec = topology.service(rule.service)
        if rule.methods:
            permissions = [_path_exact(f"/{spec.grpc_service}/{m}") for m in rule.methods]
        else:
            permissions = [_path_prefix(f"/{spec.grpc_service}/")]
        name = f"{index:02d}-{rule.kind.value}-{rule.caller_service or 'any'}-to-{rule.service}"
        policies[name] = Policy(
            permissions=[Permission(or_rules=PermissionSet(rules=permissions))],
            principals=[regex_principal(rule.caller_pattern)],
        )
    return RbacRules(action=RbacAction.ALLOW, policies=policies)


def rbac_filter(rules: RbacRules) -> HttpFilter:
    return HttpFilter(name="envoy.filters.http.rbac", typed_config=typed(Rbac(rules=rules)))


def router_filter() -> HttpFilter:
    return HttpFilter(name="envoy.filters.http.router", typed_config=typed(Router()))


def retry_policy(num_retries: int, per_try_timeout: dt.timedelta) -> RetryPolicy:
    return RetryPolicy(
        retry_on=RETRY_ON,
        num_retries=num_retries,
        per_try_timeout=per_try_timeout,
        retry_priority=RetryPolicyRetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=typed(PreviousPrioritiesConfig(update_frequency=1)),
        ),
        retry_host_predicate=[
            RetryPolicyRetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=typed(PreviousHostsPredicate()),
            )
        ],
        # With locality weights 80/20 a re-pick lands on the local region 4 times in 5; enough
        # re-picks make it near certain that a retry avoids the host that just failed.
        host_selection_retry_max_attempts=20,
    )
