package citygate.city_test

import rego.v1

import data.citygate.city

# A request as citygate builds the input (OPA-Envoy v3 shape + identity).
# `ngsi` as the filter derives it on the NGSI routes (other routes do not
# read it): the default tenant, no filters, no caller context.
req(method, parsed_path, query, identity) := {
	"attributes": {"request": {"http": {"method": method, "headers": {}}}},
	"parsed_path": parsed_path,
	"parsed_query": query,
	"identity": identity,
	"ngsi": {"api": "v2", "tenant": null, "service_path": [], "query_attrs": [], "context": null},
}

filtering(r, attrs) := object.union(r, {"ngsi": {"query_attrs": attrs}})

with_context(r, link) := object.union(r, {"ngsi": {"context": link}})

with_header(r, name, value) := object.union(r, {"attributes": {"request": {"http": {"headers": {name: value}}}}})

with_body(r, body) := object.union(r, {"parsed_body": body})

anonymous := {"kind": "anonymous", "subject": null, "roles": [], "claims": {}}

user(subject, role_list, amr) := {"kind": "jwt", "subject": subject, "roles": role_list, "claims": {"amr": amr}}

citizen := user("alice", ["citizen"], ["pwd"])

citizen_mfa := user("alice", ["citizen"], ["pwd", "mfa"])

operator := user("op-1", ["city-operator"], ["pwd"])

operator_mfa := user("op-1", ["city-operator"], ["pwd", "mfa"])

analyst := user("an-1", ["traffic-analyst"], ["pwd", "mfa"])

emergency := user("em-1", ["emergency-services"], ["pwd"])

parking_list := ["v2", "entities"]

parking_query := {"type": ["ParkingSpot"]}

decide(r) := d if {
	d := city.decision with input as r
}

allowed_with(r, profile) if {
	d := decide(r)
	d.allowed == true
	d.redact == profile
}

denied(r) if decide(r).allowed == false

# --- open data ---------------------------------------------------------------

test_anonymous_reads_open_parking_data_minimized if {
	allowed_with(req("GET", parking_list, parking_query, anonymous), "open-data")
}

test_anonymous_reads_open_entity_by_ngsi_ld_id if {
	allowed_with(req("GET", ["ngsi-ld", "v1", "entities", "urn:ngsi-ld:AirQualityObserved:station-7"], {}, anonymous), "open-data")
}

test_anonymous_reads_several_open_types if {
	allowed_with(req("GET", parking_list, {"type": ["ParkingSpot,TrafficFlowObserved"]}, anonymous), "open-data")
}

test_anonymous_cannot_read_waste_vehicles if {
	denied(req("GET", parking_list, {"type": ["WasteVehicle"]}, anonymous))
}

test_anonymous_cannot_mix_open_and_closed_types if {
	denied(req("GET", parking_list, {"type": ["ParkingSpot,WasteVehicle"]}, anonymous))
}

test_anonymous_cannot_list_all_types if {
	denied(req("GET", parking_list, {}, anonymous))
}

test_anonymous_cannot_write_open_data if {
	denied(req("POST", parking_list, parking_query, anonymous))
}

test_open_data_types_come_from_data if {
	denied(req("GET", parking_list, parking_query, anonymous)) with data.city.open_data_types as []
}

test_anonymous_cannot_read_open311 if {
	denied(req("GET", ["open311", "v2", "requests.json"], {}, anonymous))
}

# --- citizens ----------------------------------------------------------------

test_citizen_lists_own_requests if {
	allowed_with(req("GET", ["open311", "v2", "requests.json"], {"account_id": ["alice"]}, citizen), "citizen")
}

test_citizen_cannot_list_someone_elses_requests if {
	denied(req("GET", ["open311", "v2", "requests.json"], {"account_id": ["bob"]}, citizen))
}

test_citizen_cannot_list_all_requests if {
	denied(req("GET", ["open311", "v2", "requests.json"], {}, citizen))
}

test_citizen_reads_one_request_with_citizen_profile if {
	allowed_with(req("GET", ["open311", "v2", "requests", "42.json"], {}, citizen), "citizen")
}

test_citizen_files_request_in_own_name_with_mfa if {
	allowed_with(with_body(req("POST", ["open311", "v2", "requests.json"], {}, citizen_mfa), {"account_id": ["alice"]}), "citizen")
}

test_citizen_files_json_request_in_own_name_with_mfa if {
	allowed_with(with_body(req("POST", ["open311", "v2", "requests.json"], {}, citizen_mfa), {"account_id": "alice"}), "citizen")
}

test_citizen_write_needs_mfa if {
	denied(with_body(req("POST", ["open311", "v2", "requests.json"], {}, citizen), {"account_id": ["alice"]}))
}

test_citizen_cannot_file_in_someone_elses_name if {
	denied(with_body(req("POST", ["open311", "v2", "requests.json"], {}, citizen_mfa), {"account_id": ["bob"]}))
}

test_citizen_cannot_file_with_a_repeated_account_field if {
	denied(with_body(req("POST", ["open311", "v2", "requests.json"], {}, citizen_mfa), {"account_id": ["alice", "bob"]}))
	denied(with_body(req("POST", ["open311", "v2", "requests.json"], {}, citizen_mfa), {"account_id": ["bob", "alice"]}))
}

test_citizen_edits_own_request_with_mfa if {
	allowed_with(with_body(req("PATCH", ["open311", "v2", "requests", "42.json"], {}, citizen_mfa), {"account_id": "alice"}), "citizen")
}

test_citizen_cannot_edit_someone_elses_request if {
	denied(with_body(req("PUT", ["open311", "v2", "requests", "42.json"], {}, citizen_mfa), {"account_id": "bob"}))
}

test_citizen_cannot_delete_requests if {
	denied(with_body(req("DELETE", ["open311", "v2", "requests", "42.json"], {}, citizen_mfa), {"account_id": "alice"}))
}

test_citizen_reads_open_data_as_open_data if {
	allowed_with(req("GET", parking_list, parking_query, citizen), "open-data")
}

test_citizen_cannot_read_waste_vehicles if {
	denied(req("GET", parking_list, {"type": ["WasteVehicle"]}, citizen))
}

# --- operators ---------------------------------------------------------------

test_operator_reads_everything_with_operator_profile if {
	allowed_with(req("GET", parking_list, {"type": ["WasteVehicle"]}, operator), "operator")
	allowed_with(req("GET", ["open311", "v2", "requests.json"], {}, operator), "operator")
}

test_operator_writes_with_mfa if {
	allowed_with(req("PATCH", ["v2", "entities", "urn:ngsi-ld:ParkingSpot:1", "attrs"], {}, operator_mfa), "operator")
	allowed_with(req("DELETE", ["open311", "v2", "requests", "42.json"], {}, operator_mfa), "operator")
}

test_operator_write_needs_mfa if {
	denied(req("POST", parking_list, {}, operator))
}

# --- analysts ----------------------------------------------------------------

test_analyst_reads_ngsi_with_analyst_profile if {
	allowed_with(req("GET", parking_list, {"type": ["TrafficFlowObserved"]}, analyst), "analyst")
	allowed_with(req("GET", ["ngsi-ld", "v1", "entities"], {"type": ["WasteVehicle"]}, analyst), "analyst")
}

test_analyst_reads_open311_list_with_analyst_profile if {
	allowed_with(req("GET", ["open311", "v2", "requests.json"], {}, analyst), "analyst")
}

test_analyst_cannot_write_even_with_mfa if {
	denied(req("POST", parking_list, {}, analyst))
}

# --- emergency services --------------------------------------------------------

test_emergency_reads_full_data_with_logged_reason if {
	d := decide(with_header(req("GET", ["open311", "v2", "requests", "42.json"], {}, emergency), "x-access-reason", "fire at Main St 5"))
	d.allowed == true
	d.redact == "emergency"
	d.reason == "emergency access: fire at Main St 5"
}

test_emergency_without_reason_is_refused_with_400 if {
	d := decide(req("GET", parking_list, {"type": ["WasteVehicle"]}, emergency))
	d.allowed == false
	d.http_status == 400
}

test_emergency_blank_reason_is_refused if {
	denied(with_header(req("GET", parking_list, {}, emergency), "x-access-reason", "   "))
}

test_emergency_cannot_write if {
	denied(with_header(req("POST", parking_list, {}, emergency), "x-access-reason", "fire"))
}

# --- everything else -----------------------------------------------------------

test_unlisted_api_is_denied_for_every_role if {
	every identity in [anonymous, citizen_mfa, operator_mfa, analyst] {
		denied(req("GET", ["admin", "users"], {}, identity))
	}
}

test_unknown_role_gets_nothing_but_open_data if {
	denied(req("GET", ["open311", "v2", "requests.json"], {}, user("x", ["mayor"], ["mfa"])))
	allowed_with(req("GET", parking_list, parking_query, user("x", ["mayor"], ["mfa"])), "open-data")
}

test_denials_carry_a_reason if {
	decide(req("GET", ["admin"], {}, anonymous)).reason == "no rule allows this request"
}

# --- filters, sorts and projections -------------------------------------------

test_open_data_may_filter_on_what_it_shows if {
	allowed_with(filtering(req("GET", parking_list, parking_query, anonymous), ["occupancy", "totalSpotNumber"]), "open-data")
}

test_open_data_may_not_filter_on_what_it_removes if {
	denied(filtering(req("GET", parking_list, parking_query, anonymous), ["occupiedBy"]))
	denied(filtering(req("GET", parking_list, parking_query, anonymous), ["occupancy", "ownerName"]))
}

test_open_data_may_not_filter_on_what_it_generalizes if {
	denied(filtering(req("GET", parking_list, parking_query, anonymous), ["location"]))
	denied(filtering(req("GET", parking_list, parking_query, anonymous), ["dateObserved"]))
}

test_open_data_refuses_what_cannot_be_read if {
	denied(filtering(req("GET", parking_list, parking_query, anonymous), ["*"]))
}

test_open_data_refuses_a_callers_own_context if {
	denied(with_context(req("GET", ["ngsi-ld", "v1", "entities"], parking_query, anonymous), "<https://evil.example/ctx.jsonld>"))
}

test_open_data_needs_the_ngsi_input if {
	r := req("GET", parking_list, parking_query, anonymous)
	denied(object.remove(r, ["ngsi"]))
}

test_analysts_may_not_filter_on_what_their_profile_hides if {
	denied(filtering(req("GET", parking_list, {"type": ["TrafficFlowObserved"]}, analyst), ["licensePlate"]))
	denied(filtering(req("GET", parking_list, {"type": ["TrafficFlowObserved"]}, analyst), ["location"]))
	denied(filtering(req("GET", parking_list, {"type": ["TrafficFlowObserved"]}, analyst), ["*"]))
	denied(with_context(req("GET", ["ngsi-ld", "v1", "entities"], {}, analyst), "<https://evil.example/ctx.jsonld>"))
}

test_analysts_may_filter_on_the_rest if {
	allowed_with(filtering(req("GET", parking_list, {"type": ["TrafficFlowObserved"]}, analyst), ["intensity", "averageVehicleSpeed"]), "analyst")
}

test_operators_filter_freely if {
	allowed_with(filtering(req("GET", parking_list, {}, operator), ["licensePlate", "*"]), "operator")
}

# --- batch operations and subscriptions (input.ngsi) --------------------------

ngsi_req(method, parsed_path, identity, ngsi) := object.union(req(method, parsed_path, {}, identity), {"ngsi": ngsi})

batch_query(types, attrs) := {"batch": true, "action": "read_entities", "entity_types": types, "query_attrs": attrs, "context": null}

batch_write(action) := {"batch": true, "action": action, "entity_types": ["Vehicle"], "query_attrs": [], "context": null}

subscribe(url, attrs, types) := {
	"batch": false, "action": "create_subscriptions", "entity_types": types, "query_attrs": [], "context": null,
	"subscription": {"notification_url": url, "entities": [], "attrs": attrs},
}

v2_query := ["v2", "op", "query"]

v2_update := ["v2", "op", "update"]

v2_subscriptions := ["v2", "subscriptions"]

collector := "https://analytics.city.example/notify/traffic"

test_anonymous_batch_queries_open_types_minimized if {
	allowed_with(ngsi_req("POST", v2_query, anonymous, batch_query(["ParkingSpot"], ["occupancy"])), "open-data")
}

test_anonymous_batch_queries_no_closed_or_unknown_type if {
	denied(ngsi_req("POST", v2_query, anonymous, batch_query(["ParkingSpot", "Vehicle"], [])))
	denied(ngsi_req("POST", v2_query, anonymous, batch_query(["*"], [])))
	denied(ngsi_req("POST", v2_query, anonymous, batch_query([], [])))
	denied(ngsi_req("POST", v2_query, anonymous, batch_query(["ParkingSpot"], ["occupiedBy"])))
}

test_batch_updates_need_an_operator_with_mfa if {
	denied(ngsi_req("POST", v2_update, operator, batch_write("update_entities")))
	allowed_with(ngsi_req("POST", v2_update, operator_mfa, batch_write("update_entities")), "operator")
	allowed_with(ngsi_req("POST", v2_update, operator_mfa, batch_write("delete_entities")), "operator")
	denied(ngsi_req("POST", v2_update, analyst, batch_write("upsert_entities")))
	denied(ngsi_req("POST", v2_update, anonymous, batch_write("create_entities")))
}

test_operators_batch_query_without_mfa if {
	allowed_with(ngsi_req("POST", v2_query, operator, batch_query(["*"], ["*"])), "operator")
}

test_analysts_batch_query_what_their_profile_leaves if {
	allowed_with(ngsi_req("POST", v2_query, analyst, batch_query(["TrafficFlowObserved"], ["intensity"])), "analyst")
	denied(ngsi_req("POST", v2_query, analyst, batch_query(["TrafficFlowObserved"], ["licensePlate"])))
}

test_analysts_subscribe_the_citys_collector_to_what_their_profile_leaves if {
	allowed_with(ngsi_req("POST", v2_subscriptions, analyst, subscribe(collector, ["intensity"], ["TrafficFlowObserved"])), "analyst")
}

test_analysts_cannot_subscribe_an_outside_url if {
	denied(ngsi_req("POST", v2_subscriptions, analyst, subscribe("https://collector.example.org/hook", ["intensity"], ["TrafficFlowObserved"])))
	denied(ngsi_req("POST", v2_subscriptions, analyst, subscribe("https://analytics.city.example.evil.example/notify/x", ["intensity"], ["TrafficFlowObserved"])))
	denied(ngsi_req("POST", v2_subscriptions, analyst, subscribe("http://analytics.city.example/notify/x", ["intensity"], ["TrafficFlowObserved"])))
}

test_analysts_cannot_subscribe_to_what_their_profile_hides if {
	denied(ngsi_req("POST", v2_subscriptions, analyst, subscribe(collector, ["intensity", "driverName"], ["TrafficFlowObserved"])))
	denied(ngsi_req("POST", v2_subscriptions, analyst, subscribe(collector, ["*"], ["TrafficFlowObserved"])))
	denied(ngsi_req("POST", v2_subscriptions, analyst, subscribe(collector, [], ["TrafficFlowObserved"])))
	denied(ngsi_req("POST", v2_subscriptions, analyst, subscribe(collector, ["intensity"], ["*"])))
}

test_subscriptions_are_not_open_data if {
	denied(ngsi_req("POST", v2_subscriptions, anonymous, subscribe(collector, ["occupancy"], ["ParkingSpot"])))
	denied(ngsi_req("GET", v2_subscriptions, anonymous, {"batch": false, "action": "read_subscriptions", "entity_types": [], "query_attrs": [], "context": null}))
	denied(ngsi_req("POST", v2_subscriptions, citizen_mfa, subscribe(collector, ["occupancy"], ["ParkingSpot"])))
}

test_operators_manage_subscriptions_with_mfa if {
	read := {"batch": false, "action": "read_subscriptions", "entity_types": [], "query_attrs": [], "context": null}
	allowed_with(ngsi_req("GET", v2_subscriptions, operator, read), "operator")
	denied(ngsi_req("POST", v2_subscriptions, operator, subscribe("https://anywhere.example/", ["*"], ["*"])))
	allowed_with(ngsi_req("POST", v2_subscriptions, operator_mfa, subscribe("https://anywhere.example/", ["*"], ["*"])), "operator")
}

# --- tenants ------------------------------------------------------------------

in_tenant(r, tenant, paths) := object.union(r, {"ngsi": {"tenant": tenant, "service_path": paths, "api": "v2"}})

parking_read := req("GET", parking_list, parking_query, anonymous)

test_the_default_tenant_serves_without_headers if {
	d := decide(object.union(parking_read, {"ngsi": {"tenant": null, "service_path": [], "api": "v2"}}))
	d.allowed
	not d.headers
}

test_an_open_tenant_is_passed_on_as_judged if {
	d := decide(in_tenant(parking_read, "parking", ["/district1", "/district2/#"]))
	d.allowed
	d.headers == {"fiware-service": "parking", "fiware-servicepath": "/district1,/district2/#"}
}

test_a_closed_tenant_needs_one_of_its_roles if {
	d := decide(in_tenant(parking_read, "waste", []))
	d.allowed == false
	d.reason == "this caller may not use this tenant or service path"
	denied(in_tenant(req("GET", parking_list, {"type": ["TrafficFlowObserved"]}, analyst), "waste", []))
	allowed_with(in_tenant(req("GET", parking_list, {"type": ["TrafficFlowObserved"]}, analyst), "traffic", []), "analyst")
	allowed_with(in_tenant(req("GET", parking_list, {}, operator), "waste", []), "operator")
}

test_unknown_tenants_are_refused if {
	denied(in_tenant(parking_read, "nobody", []))
}

test_ngsi_ld_tenants_are_passed_on_in_their_own_header if {
	r := object.union(req("GET", ["ngsi-ld", "v1", "entities"], parking_query, anonymous), {"ngsi": {"tenant": "parking", "service_path": [], "api": "ld"}})
	decide(r).headers == {"ngsild-tenant": "parking"}
}
