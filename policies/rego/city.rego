# citygate city policy pack: who may do what on the city's APIs, and which
# redaction profile the response gets. Entrypoint: data.citygate.city.decision
#
# Roles: citizen, city-operator, traffic-analyst, emergency-services;
# anonymous callers read open data only. Everything not listed is denied.
package citygate.city

import rego.v1

http := input.attributes.request.http

path := input.parsed_path

roles contains role if some role in input.identity.roles

mfa if "mfa" in input.identity.claims.amr

is_read if http.method in {"GET", "HEAD"}

# A batch query is a read sent as POST.
is_read if ngsi_batch_query

is_write if {
	http.method in {"POST", "PUT", "PATCH", "DELETE"}
	not ngsi_batch_query
}

# --- APIs -------------------------------------------------------------------

ngsi_v2 if {
	input.parsed_path[0] == "v2"
	input.parsed_path[1] == "entities"
}

ngsi_ld if {
	input.parsed_path[0] == "ngsi-ld"
	input.parsed_path[1] == "v1"
	input.parsed_path[2] == "entities"
}

ngsi if ngsi_v2

ngsi if ngsi_ld

# Batch operations (/v2/op/*, /ngsi-ld/v1/entityOperations/*) name their
# targets in the body; input.ngsi carries them.
ngsi if input.ngsi.batch

ngsi_batch_query if {
	input.ngsi.batch
	input.ngsi.action == "read_entities"
}

# Subscriptions: the broker later sends data to the notification URL by
# its own request, past the gateway's response path (nothing minimizes it).
ngsi_subscriptions if input.ngsi.action in {
	"read_subscriptions", "create_subscriptions",
	"update_subscriptions", "delete_subscriptions",
}

# /v2/entities/{id} or /ngsi-ld/v1/entities/{id}
entity_id := path[2] if ngsi_v2

entity_id := path[3] if ngsi_ld

open311_list if path == ["open311", "v2", "requests.json"]

open311_item if {
	count(path) == 4
	array.slice(path, 0, 3) == ["open311", "v2", "requests"]
	endswith(path[3], ".json")
}

open311 if open311_list

open311 if open311_item

# Entity types asked for: the `type` query parameter (comma-separated), else
# the type inside an NGSI-LD style id (urn:ngsi-ld:<Type>:<local id>).
entity_types := input.ngsi.entity_types if {
	input.ngsi.batch
} else := split(input.parsed_query.type[0], ",") if {
	count(input.parsed_query.type) == 1
} else := [parts[2]] if {
	parts := split(entity_id, ":")
	count(parts) >= 4
	parts[0] == "urn"
}

open_data_request if {
	ngsi
	count(entity_types) > 0
	every t in entity_types {
		t in data.city.open_data_types
	}
	open_data_query
}

# --- Filters, sorts and projections ------------------------------------------
#
# A filter on an attribute the caller's profile removes or generalizes
# answers questions about it without showing it: q=occupiedBy=="<plate>"
# tells which spot a car occupies though occupiedBy never appears in the
# answer. input.ngsi.query_attrs names every attribute a filter, sort,
# projection or geo-query references ("*" when citygate cannot tell), and
# a caller's own JSON-LD context could rename attributes, so it is refused.

# Open data: only what the open-data profile shows unchanged.
open_data_query if {
	input.ngsi.context == null
	every a in input.ngsi.query_attrs {
		a in data.city.open_data_query_attrs
	}
}

# Analysts: nothing the analyst profile hashes, removes or generalizes.
analyst_query if {
	input.ngsi.context == null
	every a in input.ngsi.query_attrs {
		a != "*"
		not a in data.city.analyst_hidden_attrs
	}
}

# --- Rules, most privileged first --------------------------------------------

reason_header := trim_space(http.headers["x-access-reason"])

emergency_allowed if {
	roles["emergency-services"]
	is_read
	any_api
	has_reason
}

has_reason if reason_header != ""

any_api if ngsi

any_api if ngsi_subscriptions

any_api if open311

operator_allowed if {
	roles["city-operator"]
	any_api
	is_read
}

operator_allowed if {
	roles["city-operator"]
	any_api
	is_write
	mfa
}

analyst_allowed if {
	roles["traffic-analyst"]
	is_read
	ngsi
	analyst_query
}

analyst_allowed if {
	roles["traffic-analyst"]
	is_read
	open311_list
}

# Analysts may subscribe the city's own analytics collectors to what their
# profile leaves as it is: the notifications are not minimized.
analyst_allowed if {
	roles["traffic-analyst"]
	input.ngsi.action == "create_subscriptions"
	notification_url_allowed
	analyst_query
	count(input.ngsi.subscription.attrs) > 0
	every a in input.ngsi.subscription.attrs {
		a != "*"
		not a in data.city.analyst_hidden_attrs
	}
	every t in input.ngsi.entity_types {
		t != "*"
	}
}

# Prefixes end in "/": https://analytics.city.example.evil.example/ is not
# https://analytics.city.example/.
notification_url_allowed if {
	some prefix in data.city.notification_url_prefixes
	startswith(input.ngsi.subscription.notification_url, prefix)
}

# Open311 bodies are form-encoded (values are arrays) or JSON. A repeated
# form field names nobody: upstreams disagree on which value they keep
# (first or last), so judging either one lets a caller file in another's
# name.
body_account := input.parsed_body.account_id if {
	is_string(input.parsed_body.account_id)
} else := input.parsed_body.account_id[0] if {
	count(input.parsed_body.account_id) == 1
}

own_account if {
	input.identity.subject != null
	body_account == input.identity.subject
}

# A citizen lists only their own requests…
citizen_allowed if {
	roles.citizen
	is_read
	open311_list
	input.parsed_query.account_id == [input.identity.subject]
}

# …reads one request (the `citizen` profile hides other people's data)…
citizen_allowed if {
	roles.citizen
	is_read
	open311_item
}

# …and files or edits requests in their own name, with MFA.
citizen_allowed if {
	roles.citizen
	http.method in {"POST"}
	open311_list
	mfa
	own_account
}

citizen_allowed if {
	roles.citizen
	http.method in {"PUT", "PATCH"}
	open311_item
	mfa
	own_account
}

open_data_allowed if {
	is_read
	open_data_request
}

profile := "emergency" if {
	emergency_allowed
} else := "operator" if {
	operator_allowed
} else := "analyst" if {
	analyst_allowed
} else := "citizen" if {
	citizen_allowed
} else := "open-data" if {
	open_data_allowed
}

access_reason := concat("", ["emergency access: ", reason_header]) if {
	profile == "emergency"
} else := concat(" ", [profile, "access"])

# --- Tenants ------------------------------------------------------------------
#
# Fiware-Service (NGSI-LD: NGSILD-Tenant) selects whose data a request
# touches, and Fiware-ServicePath which part of it: a key that may read one
# tenant must not pick another by header. Without the header the broker's
# default tenant serves (open to every caller the rules above admit); a
# named tenant needs one of its roles. citygate has already refused
# repeated or malformed headers (a service path like /a/../b); the broker
# gets exactly the values judged here.

tenancy_ok if input.ngsi.tenant == null

tenancy_ok if data.city.tenancy.tenants[input.ngsi.tenant].anyone

tenancy_ok if {
	some role in data.city.tenancy.tenants[input.ngsi.tenant].roles
	roles[role]
}

# The headers the broker gets, when the request names a tenant or a path.
tenant_named if input.ngsi.tenant != null

tenant_named if count(input.ngsi.service_path) > 0

tenant_headers := object.union(tenant_header, service_path_header)

default tenant_header := {}

tenant_header := {"fiware-service": input.ngsi.tenant} if {
	input.ngsi.api == "v2"
	input.ngsi.tenant != null
}

tenant_header := {"ngsild-tenant": input.ngsi.tenant} if {
	input.ngsi.api == "ld"
	input.ngsi.tenant != null
}

default service_path_header := {}

service_path_header := {"fiware-servicepath": concat(",", input.ngsi.service_path)} if {
	count(input.ngsi.service_path) > 0
}

default decision := {"allowed": false, "reason": "no rule allows this request"}

decision := {"allowed": true, "redact": profile, "reason": access_reason} if {
	profile
	not tenant_named
}

decision := {"allowed": true, "redact": profile, "reason": access_reason, "headers": tenant_headers} if {
	profile
	tenant_named
	tenancy_ok
}

decision := {"allowed": false, "reason": "this caller may not use this tenant or service path"} if {
	profile
	tenant_named
	not tenancy_ok
}

decision := {
	"allowed": false,
	"http_status": 400,
	"reason": "emergency access requires an x-access-reason header",
	"body": "{\"title\":\"emergency access requires an x-access-reason header\"}",
} if {
	roles["emergency-services"]
	not profile
	not has_reason
}
