//! The built-in tenant: who is broken in which way, and the operation names faults can target.

use serde_json::{json, Map, Value};
use std::time::Duration;
use uuid::Uuid;

use super::faults::Faults;
use super::graph_limit::WriteQuota;
use super::provisioning::initial_capabilities;
use super::ratelimit::RateLimiter;
use super::state::{
    AppGroupRec, AppUserRec, DirectoryRole, Domain, EntraEntry, EntraGroup, OktaGroupRec,
    OktaUserRec, State,
};
use super::token::TokenStore;
use super::SandboxOptions;
use crate::domain::ImmutableId;

/// Every operation name a [`super::Fault`] can target and a [`super::CallRecord`] carries.
pub const OPERATIONS: &[&str] = &[
    "okta.get_app",
    "graph.token",
    "graph.get_user",
    "graph.list_users",
    "graph.get_domain",
    "graph.get_organization",
    "graph.member_of",
    "graph.transitive_member_of",
    "graph.update_user",
    "okta.get_user",
    "okta.user_groups",
    "okta.get_app_user",
    "okta.list_app_users",
    "okta.app_groups",
    "okta.unassign",
    "okta.assign",
    "okta.list_mappings",
    "okta.get_mapping",
    "okta.get_feature",
    "okta.put_feature",
    "okta.get_app_user_schema",
    "okta.list_logs",
];

/// Graph application permissions the bot's app is granted by default.
pub const GRAPH_APP_ROLES: &[&str] = &[
    "User.ReadWrite.All",
    "Domain.Read.All",
    "Organization.Read.All",
    "RoleManagement.Read.Directory",
];

pub const TENANT_NAME: &str = "sandbox-tenant";
pub const TENANT_GUID: &str = "7b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
pub const CLIENT_ID: &str = "fixbot-sandbox";
pub const APP_ID: &str = "0oa1office365";
pub const ORG_NAME: &str = "Contoso";

pub const FEDERATED_DOMAIN: &str = "contoso.com";
pub const INITIAL_DOMAIN: &str = "contoso.onmicrosoft.com";
pub const MANAGED_DOMAIN: &str = "fabrikam.com";

/// No ImmutableID in Entra; assigned directly in Okta with one.
pub const ADELE: &str = "adele@contoso.com";
/// Federated, Entra and Okta disagree.
pub const MEGAN: &str = "megan@contoso.com";
/// Managed domain, Entra and Okta disagree.
pub const ALEX: &str = "alex@fabrikam.com";
/// Like megan, with an apostrophe in the UPN and the Okta login.
pub const OBRIEN: &str = "o'brien@contoso.com";
/// Entra UPN; the app user's `credentials.userName` equals it, the Okta login does not.
pub const DIEGO: &str = "diego@contoso.com";
pub const DIEGO_OKTA_LOGIN: &str = "diego.s@contoso.com";
/// Synced from on-premises AD: Graph refuses every write.
pub const LYNNE: &str = "lynne@contoso.com";
/// Granted the app only through the group [`LICENSED_GROUP`].
pub const GRADY: &str = "grady@contoso.com";
/// Only in Entra.
pub const NESTOR: &str = "nestor@contoso.com";
/// Only in Okta.
pub const GHOST: &str = "ghost@contoso.com";
/// Holds Global Administrator.
pub const ISAIAH: &str = "isaiah@contoso.com";
/// Holds Privileged Authentication Administrator only through the role-assignable group
/// [`ROLE_GROUP`]: direct `memberOf` shows no role.
pub const ROHAN: &str = "rohan@contoso.com";
/// Ordinary; the config's protected list names it.
pub const BREAKGLASS: &str = "breakglass@contoso.com";
/// ImmutableID with `+` and `/`, the same in Entra and Okta.
pub const PLUSID: &str = "plusid@contoso.com";
/// Federated, Entra and Okta disagree; the app profile holds two licenses, two roles and a
/// read-only attribute Okta imported from Office 365 ([`PRIYA_LAST_SIGN_IN`]).
pub const PRIYA: &str = "priya@contoso.com";
/// Federated, Entra and Okta disagree; the app profile holds an attribute the app user schema no
/// longer defines ([`QUINN_UNDEFINED_ATTRIBUTE`]), so it cannot be carried over.
pub const QUINN: &str = "quinn@contoso.com";

pub const ADELE_OKTA_IMMUTABLE_ID: &str = "DicTZZ4mN02yp03kUua0OA==";
pub const MEGAN_ENTRA_IMMUTABLE_ID: &str = "zHX2NueB9U6o4l2UDtkEdQ==";
pub const MEGAN_OKTA_IMMUTABLE_ID: &str = "m1QNawNvWkeWAKNaCZlQ2A==";
pub const ALEX_ENTRA_IMMUTABLE_ID: &str = "zm4RjTgX2Ue9nBckEeILjw==";
pub const ALEX_OKTA_IMMUTABLE_ID: &str = "z5LBkKzTr0SPId22bK1KJg==";
pub const OBRIEN_ENTRA_IMMUTABLE_ID: &str = "OLNwoSY5WUCyjBBdH7F8Iw==";
pub const OBRIEN_OKTA_IMMUTABLE_ID: &str = "8TDWD53yqU2VP0jxoJ92tQ==";
pub const DIEGO_ENTRA_IMMUTABLE_ID: &str = "nOKxDIxlFEqV5gr1k70Ezw==";
pub const DIEGO_OKTA_IMMUTABLE_ID: &str = "QrJMayNKlkWiF76t28SWyw==";
pub const LYNNE_ENTRA_IMMUTABLE_ID: &str = "WGYnkicewEGKamPsJO3mpA==";
pub const LYNNE_OKTA_IMMUTABLE_ID: &str = "lLqXru3QL0iPbQVYTviqOA==";
pub const GRADY_ENTRA_IMMUTABLE_ID: &str = "w3B6kBIQN0C2TOQijDj7KQ==";
pub const GRADY_OKTA_IMMUTABLE_ID: &str = "JAUVf7k030Wed2mxD0IFtA==";
pub const NESTOR_ENTRA_IMMUTABLE_ID: &str = "GHf4xnZtfkCIHtFiri6xVA==";
pub const GHOST_OKTA_IMMUTABLE_ID: &str = "h6dm7OeV0UG3Ma8QUGvy7w==";
pub const ISAIAH_ENTRA_IMMUTABLE_ID: &str = "XhMCyrGS8kOO3g16w7rqng==";
pub const ISAIAH_OKTA_IMMUTABLE_ID: &str = "QkISV1FQzEGRf5rK4B9QVw==";
pub const ROHAN_ENTRA_IMMUTABLE_ID: &str = "o1Bq3Hk0c0WJQ2dGxZ9T4g==";
pub const ROHAN_OKTA_IMMUTABLE_ID: &str = "4Vf9mM0s9UeG2m1bqP7cLw==";
pub const BREAKGLASS_ENTRA_IMMUTABLE_ID: &str = "stajEAWqGkGycVlFeV6CKQ==";
pub const BREAKGLASS_OKTA_IMMUTABLE_ID: &str = "y21CT5SzNku7LUIPD4gICw==";
pub const PRIYA_ENTRA_IMMUTABLE_ID: &str = "2v9pXhYq3k6cR1m0Zb4T8w==";
pub const PRIYA_OKTA_IMMUTABLE_ID: &str = "9Ck1mQe7W0uYpL3sVb6N2g==";
pub const PRIYA_LICENSES: &[&str] = &["ENTERPRISEPACK", "EMS"];
pub const PRIYA_ROLES: &[&str] = &["User", "Helpdesk Administrator"];
/// The read-only `lastSignInDateTime` priya's app profile holds.
pub const PRIYA_LAST_SIGN_IN: &str = "2024-05-02T08:11:00.000Z";
pub const QUINN_ENTRA_IMMUTABLE_ID: &str = "b0Jz4yWc2kq8QnS1xE5fHg==";
pub const QUINN_OKTA_IMMUTABLE_ID: &str = "Xq7mR2pK9UeA3cT6wN1bLw==";
/// The attribute quinn's app profile holds that the schema does not define.
pub const QUINN_UNDEFINED_ATTRIBUTE: &str = "legacyLicenseGroup";
/// GUID 65dc9f50-3f63-4f83-bd05-61e6211c70cf.
pub const PLUSID_IMMUTABLE_ID: &str = "UJ/cZWM/g0+9BWHmIRxwzw==";
/// In Entra and Okta, but not assigned to the Office 365 app.
pub const NOEL: &str = "noel@contoso.com";
pub const NOEL_ENTRA_IMMUTABLE_ID: &str = "Tq3vJ9bQ0UyGm7aZ2cX5kA==";
/// Sourced from AD in Okta: Okta's default `immutableId` mapping
/// (`hasDirectoryUser()?findDirectoryUser().externalId:null`, sandbox mapping mode
/// `directory_user`) sends her AD objectGUID, which the app user holds; Entra holds none.
pub const DANA: &str = "dana@contoso.com";
/// Dana's AD objectGUID, base64 as Okta's `externalId` gives it.
pub const DANA_AD_OBJECT_GUID: &str = "pW8dK2mN4kSxY6tQ1zR3vg==";

/// The group that grants [`GRADY`] the app.
pub const LICENSED_GROUP: &str = "O365 Licensed";
/// Assigned to the app, no members.
pub const PILOT_GROUP: &str = "O365 Pilot";
/// Not assigned to the app; adele and megan are members.
pub const SALES_GROUP: &str = "Sales";
pub const GLOBAL_ADMIN_TEMPLATE_ID: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const PRIVILEGED_AUTH_ADMIN_TEMPLATE_ID: &str = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";
/// The role-assignable Entra group through which [`ROHAN`] holds Privileged Authentication
/// Administrator.
pub const ROLE_GROUP: &str = "Tier0 Authentication Admins";
/// The profile mapping user → office365.
pub const MAPPING_ID: &str = super::okta::MAPPING_ID;
/// App profile attributes every seeded app user carries besides `immutableId`.
pub const LICENSES: &str = "ENTERPRISEPACK";
const ENTERPRISEPACK_SKU: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
const SEEDED_AT: &str = "2023-03-14T09:26:53.000Z";

/// `user0001@contoso.com` for `n = 1`.
pub fn ordinary_upn(n: usize) -> String {
    format!("user{n:04}@contoso.com")
}

/// The ImmutableID ordinary user `n` holds in both systems.
pub fn ordinary_immutable_id(n: usize) -> String {
    let guid = Uuid::from_u128(0x0e1d_5eed_0000_4000_8000_0000_0000_0000 | n as u128);
    ImmutableId::from_guid(guid).as_str().to_owned()
}

struct Builder {
    st: State,
    entra_n: u32,
    okta_n: u32,
}

impl Builder {
    fn entra(
        &mut self,
        upn: &str,
        first: &str,
        last: &str,
        iid: Option<&str>,
        synced: bool,
    ) -> String {
        self.entra_n += 1;
        let n = self.entra_n;
        let id = format!("{:08x}-5a1c-4b7e-9f00-{:012x}", 0x8d2e_0000u32 + n, n);
        let mut p = Map::new();
        let mut put = |k: &str, v: Value| {
            p.insert(k.to_owned(), v);
        };
        put("id", json!(id));
        put("businessPhones", json!([]));
        put("displayName", json!(format!("{first} {last}")));
        put("givenName", json!(first));
        put("jobTitle", Value::Null);
        put("mail", json!(upn));
        put("mobilePhone", Value::Null);
        put("officeLocation", Value::Null);
        put("preferredLanguage", json!("en-US"));
        put("surname", json!(last));
        put("userPrincipalName", json!(upn));
        put("accountEnabled", json!(true));
        put(
            "assignedLicenses",
            json!([{ "disabledPlans": [], "skuId": ENTERPRISEPACK_SKU }]),
        );
        put("createdDateTime", json!("2023-03-14T09:26:53Z"));
        put("department", Value::Null);
        put(
            "onPremisesImmutableId",
            iid.map_or(Value::Null, |v| json!(v)),
        );
        put(
            "onPremisesSyncEnabled",
            if synced { json!(true) } else { Value::Null },
        );
        put("otherMails", json!([]));
        put("proxyAddresses", json!([format!("SMTP:{upn}")]));
        put("usageLocation", json!("US"));
        self.st.entra.push(EntraEntry {
            current: p,
            prev: None,
        });
        id
    }

    fn okta(&mut self, login: &str, first: &str, last: &str, o365_iid: Option<&str>) -> String {
        self.okta_n += 1;
        let id = format!("00u{:06}Kq2sbx3h7a5", self.okta_n);
        let mut profile = Map::new();
        profile.insert("login".into(), json!(login));
        profile.insert("email".into(), json!(login));
        profile.insert("firstName".into(), json!(first));
        profile.insert("lastName".into(), json!(last));
        if let Some(v) = o365_iid {
            profile.insert("o365ImmutableId".into(), json!(v));
        }
        self.st.okta_users.push(OktaUserRec {
            id: id.clone(),
            status: "ACTIVE".into(),
            created: SEEDED_AT.into(),
            last_updated: SEEDED_AT.into(),
            profile,
            directory_external_id: None,
        });
        if let Some(everyone) = self
            .st
            .okta_groups
            .iter_mut()
            .find(|g| g.kind == "BUILT_IN")
        {
            everyone.members.push(id.clone());
        }
        id
    }

    fn assign(
        &mut self,
        okta_id: &str,
        user_name: &str,
        scope: &str,
        iid: Option<&str>,
        external_id: Option<String>,
    ) {
        let u = self
            .st
            .okta_users
            .iter()
            .find(|u| u.id == okta_id)
            .expect("seeded user");
        let mut profile = Map::new();
        profile.insert("firstName".into(), u.profile["firstName"].clone());
        profile.insert("lastName".into(), u.profile["lastName"].clone());
        if let Some(v) = iid {
            profile.insert("immutableId".into(), json!(v));
        }
        profile.insert("licenses".into(), json!([LICENSES]));
        profile.insert("roles".into(), json!(["User"]));
        profile.insert("usageLocation".into(), json!("US"));
        self.st.app_users.push(AppUserRec {
            user_id: okta_id.to_owned(),
            scope: scope.to_owned(),
            status: "PROVISIONED".into(),
            sync_state: "SYNCHRONIZED".into(),
            external_id,
            created: SEEDED_AT.into(),
            last_updated: SEEDED_AT.into(),
            status_changed: SEEDED_AT.into(),
            user_name: user_name.to_owned(),
            profile,
        });
    }

    fn set_app_profile(&mut self, okta_id: &str, name: &str, value: Value) {
        if let Some(a) = self.st.app_users.iter_mut().find(|a| a.user_id == okta_id) {
            a.profile.insert(name.to_owned(), value);
        }
    }

    fn group(&mut self, kind: &'static str, name: &str, description: &str) -> String {
        let id = format!("00g{:06}Kq2sbx3h7a5", self.st.okta_groups.len() + 1);
        self.st.okta_groups.push(OktaGroupRec {
            id: id.clone(),
            kind,
            name: name.into(),
            description: description.into(),
            members: Vec::new(),
        });
        id
    }

    fn add_member(&mut self, group: &str, okta_id: &str) {
        if let Some(g) = self.st.okta_groups.iter_mut().find(|g| g.id == group) {
            g.members.push(okta_id.to_owned());
        }
    }

    /// A user in both systems, assigned directly, with `entra_iid` in Entra and `okta_iid` in Okta.
    fn both(
        &mut self,
        upn: &str,
        first: &str,
        last: &str,
        entra_iid: Option<&str>,
        okta_iid: &str,
    ) -> (String, String) {
        let eid = self.entra(upn, first, last, entra_iid, false);
        let oid = self.okta(upn, first, last, Some(okta_iid));
        self.assign(&oid, upn, "USER", Some(okta_iid), Some(eid.clone()));
        (eid, oid)
    }
}

pub(crate) struct Secrets {
    pub client_secret: String,
    pub okta_token: String,
}

/// The initial state for `opts`, served at `origin` (`http://127.0.0.1:PORT`).
pub(crate) fn build(opts: &SandboxOptions, origin: &str, secrets: Secrets) -> State {
    let st = State {
        latency: opts.latency,
        graph_read_lag: opts.graph_read_lag,
        token_lifetime: opts.token_lifetime,
        mapping: opts.mapping,
        tenant_name: TENANT_NAME.into(),
        tenant_guid: TENANT_GUID.into(),
        client_id: CLIENT_ID.into(),
        client_secret: secrets.client_secret,
        okta_token: secrets.okta_token,
        app_id: APP_ID.into(),
        graph_base: format!("{origin}/graph/v1.0"),
        okta_base: format!("{origin}/okta"),
        org_name: ORG_NAME.into(),
        domains: vec![
            Domain {
                name: FEDERATED_DOMAIN.into(),
                federated: true,
                is_initial: false,
                is_default: true,
            },
            Domain {
                name: INITIAL_DOMAIN.into(),
                federated: false,
                is_initial: true,
                is_default: false,
            },
            Domain {
                name: MANAGED_DOMAIN.into(),
                federated: false,
                is_initial: false,
                is_default: false,
            },
        ],
        entra: Vec::new(),
        roles: Vec::new(),
        groups: Vec::new(),
        okta_users: Vec::new(),
        okta_groups: Vec::new(),
        app_groups: Vec::new(),
        app_users: Vec::new(),
        capabilities: initial_capabilities(),
        app_schema_custom: super::apps::initial_schema_custom(),
        hold_sync: false,
        provisioning_writes: Vec::new(),
        deprovisions: Vec::new(),
        tokens: TokenStore::default(),
        app_roles: GRAPH_APP_ROLES.iter().map(|r| (*r).to_owned()).collect(),
        okta_app_admin: true,
        provisioning_enabled: true,
        faults: Faults::default(),
        rate: RateLimiter::new(
            opts.okta_rate_limit,
            opts.okta_rate_window.max(Duration::from_millis(1)),
        ),
        okta_throttled: 0,
        graph_writes: WriteQuota::new(opts.graph_write_limit, opts.graph_write_window),
        graph_throttled: 0,
        calls: Vec::new(),
        syslog: Default::default(),
    };
    let mut b = Builder {
        st,
        entra_n: 0,
        okta_n: 0,
    };
    b.group("BUILT_IN", "Everyone", "All users in your organization");
    let licensed = b.group(
        "OKTA_GROUP",
        LICENSED_GROUP,
        "Users licensed for Microsoft Office 365",
    );
    let pilot = b.group("OKTA_GROUP", PILOT_GROUP, "Office 365 pilot users");
    let sales = b.group("OKTA_GROUP", SALES_GROUP, "Sales department");
    b.st.app_groups.push(AppGroupRec {
        group_id: licensed.clone(),
        priority: 0,
    });
    b.st.app_groups.push(AppGroupRec {
        group_id: pilot,
        priority: 1,
    });

    let (_, adele) = b.both(ADELE, "Adele", "Vance", None, ADELE_OKTA_IMMUTABLE_ID);
    b.add_member(&sales, &adele);
    let (_, megan) = b.both(
        MEGAN,
        "Megan",
        "Bowen",
        Some(MEGAN_ENTRA_IMMUTABLE_ID),
        MEGAN_OKTA_IMMUTABLE_ID,
    );
    b.add_member(&sales, &megan);
    b.both(
        ALEX,
        "Alex",
        "Wilber",
        Some(ALEX_ENTRA_IMMUTABLE_ID),
        ALEX_OKTA_IMMUTABLE_ID,
    );
    b.both(
        OBRIEN,
        "Siobhan",
        "O'Brien",
        Some(OBRIEN_ENTRA_IMMUTABLE_ID),
        OBRIEN_OKTA_IMMUTABLE_ID,
    );

    let diego_eid = b.entra(
        DIEGO,
        "Diego",
        "Siciliani",
        Some(DIEGO_ENTRA_IMMUTABLE_ID),
        false,
    );
    let diego = b.okta(
        DIEGO_OKTA_LOGIN,
        "Diego",
        "Siciliani",
        Some(DIEGO_OKTA_IMMUTABLE_ID),
    );
    b.assign(
        &diego,
        DIEGO,
        "USER",
        Some(DIEGO_OKTA_IMMUTABLE_ID),
        Some(diego_eid),
    );

    let lynne_eid = b.entra(
        LYNNE,
        "Lynne",
        "Robbins",
        Some(LYNNE_ENTRA_IMMUTABLE_ID),
        true,
    );
    let lynne = b.okta(LYNNE, "Lynne", "Robbins", Some(LYNNE_OKTA_IMMUTABLE_ID));
    b.assign(
        &lynne,
        LYNNE,
        "USER",
        Some(LYNNE_OKTA_IMMUTABLE_ID),
        Some(lynne_eid),
    );

    let grady_eid = b.entra(
        GRADY,
        "Grady",
        "Archie",
        Some(GRADY_ENTRA_IMMUTABLE_ID),
        false,
    );
    let grady = b.okta(GRADY, "Grady", "Archie", Some(GRADY_OKTA_IMMUTABLE_ID));
    b.add_member(&licensed, &grady);
    b.assign(
        &grady,
        GRADY,
        "GROUP",
        Some(GRADY_OKTA_IMMUTABLE_ID),
        Some(grady_eid),
    );

    b.entra(
        NESTOR,
        "Nestor",
        "Wilke",
        Some(NESTOR_ENTRA_IMMUTABLE_ID),
        false,
    );
    let ghost = b.okta(GHOST, "Casper", "Ghost", Some(GHOST_OKTA_IMMUTABLE_ID));
    b.assign(&ghost, GHOST, "USER", Some(GHOST_OKTA_IMMUTABLE_ID), None);

    let (isaiah, _) = b.both(
        ISAIAH,
        "Isaiah",
        "Langer",
        Some(ISAIAH_ENTRA_IMMUTABLE_ID),
        ISAIAH_OKTA_IMMUTABLE_ID,
    );
    b.st.roles.push(DirectoryRole {
        id: "4e2f0f0a-6b3c-4d5e-8f90-a1b2c3d4e5f6".into(),
        display_name: "Global Administrator".into(),
        template_id: GLOBAL_ADMIN_TEMPLATE_ID.into(),
        members: vec![isaiah],
    });
    let (rohan, _) = b.both(
        ROHAN,
        "Rohan",
        "Mehta",
        Some(ROHAN_ENTRA_IMMUTABLE_ID),
        ROHAN_OKTA_IMMUTABLE_ID,
    );
    let role_group = "f3a1c2d4-7e5b-4c6d-9a8b-0c1d2e3f4a5b".to_owned();
    b.st.groups.push(EntraGroup {
        id: role_group.clone(),
        display_name: ROLE_GROUP.into(),
        role_assignable: true,
        members: vec![rohan],
    });
    b.st.roles.push(DirectoryRole {
        id: "9c3b7a2e-1d4f-4e8a-b6c5-d7e8f9a0b1c2".into(),
        display_name: "Privileged Authentication Administrator".into(),
        template_id: PRIVILEGED_AUTH_ADMIN_TEMPLATE_ID.into(),
        members: vec![role_group],
    });
    b.both(
        BREAKGLASS,
        "Break",
        "Glass",
        Some(BREAKGLASS_ENTRA_IMMUTABLE_ID),
        BREAKGLASS_OKTA_IMMUTABLE_ID,
    );
    b.both(
        PLUSID,
        "Plus",
        "Id",
        Some(PLUSID_IMMUTABLE_ID),
        PLUSID_IMMUTABLE_ID,
    );

    let (_, priya) = b.both(
        PRIYA,
        "Priya",
        "Raman",
        Some(PRIYA_ENTRA_IMMUTABLE_ID),
        PRIYA_OKTA_IMMUTABLE_ID,
    );
    b.set_app_profile(&priya, "licenses", json!(PRIYA_LICENSES));
    b.set_app_profile(&priya, "roles", json!(PRIYA_ROLES));
    b.set_app_profile(&priya, "lastSignInDateTime", json!(PRIYA_LAST_SIGN_IN));
    let (_, quinn) = b.both(
        QUINN,
        "Quinn",
        "Foster",
        Some(QUINN_ENTRA_IMMUTABLE_ID),
        QUINN_OKTA_IMMUTABLE_ID,
    );
    b.set_app_profile(&quinn, QUINN_UNDEFINED_ATTRIBUTE, json!("E3-Legacy"));

    for n in 1..=opts.ordinary_users {
        let upn = ordinary_upn(n);
        let iid = ordinary_immutable_id(n);
        b.both(&upn, "User", &format!("{n:04}"), Some(&iid), &iid);
    }

    // Added after everyone else, so that the ids above stay as they were.
    b.entra(
        NOEL,
        "Noel",
        "Fischer",
        Some(NOEL_ENTRA_IMMUTABLE_ID),
        false,
    );
    b.okta(NOEL, "Noel", "Fischer", None);
    let (_, dana) = b.both(DANA, "Dana", "Ortiz", None, DANA_AD_OBJECT_GUID);
    if let Some(u) = b.st.okta_users.iter_mut().find(|u| u.id == dana) {
        u.directory_external_id = Some(DANA_AD_OBJECT_GUID.into());
    }
    b.st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_valid_immutable_ids() {
        for v in [
            ADELE_OKTA_IMMUTABLE_ID,
            MEGAN_ENTRA_IMMUTABLE_ID,
            PLUSID_IMMUTABLE_ID,
            PRIYA_ENTRA_IMMUTABLE_ID,
            PRIYA_OKTA_IMMUTABLE_ID,
            QUINN_ENTRA_IMMUTABLE_ID,
            QUINN_OKTA_IMMUTABLE_ID,
            ROHAN_ENTRA_IMMUTABLE_ID,
            ROHAN_OKTA_IMMUTABLE_ID,
            NOEL_ENTRA_IMMUTABLE_ID,
            DANA_AD_OBJECT_GUID,
        ] {
            ImmutableId::parse_value(v).unwrap();
        }
        let g = Uuid::parse_str("65dc9f50-3f63-4f83-bd05-61e6211c70cf").unwrap();
        assert_eq!(ImmutableId::from_guid(g).as_str(), PLUSID_IMMUTABLE_ID);
        assert!(PLUSID_IMMUTABLE_ID.contains('+'));
        assert_ne!(ordinary_immutable_id(1), ordinary_immutable_id(2));
    }
}
