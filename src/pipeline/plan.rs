//! The read-only plan: resolve the user once to immutable identifiers, read everything the repair
//! depends on (independent reads concurrently), and refuse early with a reason a human understands.

use super::journal::ApiFailure;
use super::refusal::{PlanError, Refusal};
use super::Inner;
use crate::directory::graph::{EntraUser, GraphError};
use crate::directory::okta::{carry_over, AppUser, CarryOver, OktaError};
use crate::domain::{Actor, EntraObjectId, ImmutableId, OktaUserId, RunId, Upn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest free-text reason kept; the rest is cut.
pub const MAX_REASON: usize = 300;

/// A repair as asked for, already validated.
#[derive(Debug, Clone)]
pub struct RepairRequest {
    pub requester: Actor,
    pub upn: Upn,
    pub immutable_id: Option<ImmutableId>,
    pub reason: Option<String>,
    pub mode: ModeChoice,
}

/// Which repair the requester asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModeChoice {
    /// The smallest safe fix: Entra-only to Okta's value when that value is authoritative,
    /// linked and unique in the tenant; otherwise the full repair.
    #[default]
    Smallest,
    /// The seed's nine steps with a new value, even when Entra-only would do.
    Full,
    /// Only the Entra-only fix (what a diagnosis offered); refused when it no longer applies,
    /// rather than silently becoming a full repair.
    EntraOnly,
}

impl ModeChoice {
    /// `smallest` (or empty), `full`, `entra-only`.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "" | "smallest" | "auto" => Ok(Self::Smallest),
            "full" => Ok(Self::Full),
            "entra-only" | "entra" => Ok(Self::EntraOnly),
            _ => Err(InputError::Mode),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smallest => "smallest",
            Self::Full => "full",
            Self::EntraOnly => "entra-only",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("user: {0}")]
    Upn(#[from] crate::domain::UpnError),
    #[error("immutable_id: {0}")]
    ImmutableId(#[from] crate::domain::ImmutableIdError),
    #[error("mode: use smallest (the default), full or entra-only")]
    Mode,
}

impl RepairRequest {
    /// Validates what a person typed. Nothing is looked up yet.
    pub fn parse(
        requester: Actor,
        upn: &str,
        immutable_id: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Self, InputError> {
        let upn = Upn::parse(upn)?;
        let immutable_id = immutable_id
            .filter(|s| !s.trim().is_empty())
            .map(ImmutableId::parse_input)
            .transpose()?;
        // Invisible characters go at the edge, so the stored plan and the audit log hold the
        // reason as every reader sees it, not text a bidi override can show reversed.
        let reason = reason
            .map(crate::domain::strip_invisible)
            .map(|r| r.trim().chars().take(MAX_REASON).collect::<String>())
            .filter(|r| !r.is_empty());
        Ok(Self {
            requester,
            upn,
            immutable_id,
            reason,
            mode: ModeChoice::Smallest,
        })
    }

    pub fn with_mode(mut self, mode: ModeChoice) -> Self {
        self.mode = mode;
        self
    }
}

/// Where the new ImmutableID comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewIdSource {
    Generated,
    GivenByRequester,
    /// The value already on Okta's assignment (no mapping): Entra is set to it, Okta untouched.
    OktaValue,
    /// Okta fills `immutableId` through this mapping expression; Entra is set to what Okta sends.
    OktaMapping {
        mapping_id: String,
        expression: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepairMode {
    /// All nine steps.
    Full,
    /// Steps 1–4 only: Entra is set to the value Okta already sends; Okta is not touched.
    EntraOnly,
}

/// The facts an approval binds to. Not provisioning state (the pause manager owns it) and not
/// fields that change on their own (`lastUpdated`, `syncState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub entra_id: String,
    pub upn: String,
    pub entra_immutable_id: Option<String>,
    pub synced: bool,
    pub authentication_type: String,
    pub app_scope: String,
    pub app_status: String,
    pub app_immutable_id: Option<String>,
}

impl Facts {
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(canonical)[..16])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub run: RunId,
    pub requester: Actor,
    pub reason: Option<String>,
    /// As Entra spells it.
    pub upn: Upn,
    pub entra_id: EntraObjectId,
    pub okta_user_id: OktaUserId,
    pub okta_login: String,
    pub federated: bool,
    /// `alias@tenant.onmicrosoft.com` for federated users.
    pub temporary_upn: Option<Upn>,
    pub entra_immutable_id_before: Option<String>,
    /// The app user before the repair: profile, licenses and roles are carried over verbatim.
    pub app_user_before: AppUser,
    pub new_immutable_id: ImmutableId,
    pub new_id_source: NewIdSource,
    pub mode: RepairMode,
    pub provisioning_before: serde_json::Value,
    /// App profile properties filled by Okta mappings; an assignment must not send them.
    pub mapped_properties: Vec<String>,
    /// What the reassignment carries over of the app profile (licenses and roles) and what it
    /// leaves to Okta, from the app user schema and the mappings. `None`: the Entra-only repair
    /// (no reassignment), or a plan stored by a version that did not read the schema.
    #[serde(default)]
    pub carry_over: Option<CarryOver>,
    /// Why this mode, for the plan message. Empty in plans stored by older versions.
    #[serde(default)]
    pub mode_why: String,
    /// The bulk repair this run belongs to: approved with it, paced by it, and continued by
    /// it after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<RunId>,
    pub notes: Vec<String>,
    pub facts: Facts,
    pub fingerprint: String,
}

impl Plan {
    pub fn okta_immutable_id_before(&self) -> Option<&str> {
        self.app_user_before.immutable_id()
    }
}

pub(crate) fn graph_err(e: GraphError) -> PlanError {
    PlanError::Unavailable {
        service: "Microsoft Graph",
        failure: ApiFailure::from_graph(&e),
    }
}

pub(crate) fn okta_err(e: OktaError) -> PlanError {
    PlanError::Unavailable {
        service: "Okta",
        failure: ApiFailure::from_okta(&e),
    }
}

/// The facts as they are now, from an Entra user and an Okta app user.
pub(crate) fn facts_of(user: &EntraUser, auth_type: &str, app_user: &AppUser) -> Facts {
    Facts {
        entra_id: user.id.to_ascii_lowercase(),
        upn: user.user_principal_name.to_ascii_lowercase(),
        entra_immutable_id: user.on_premises_immutable_id.clone(),
        synced: user.on_premises_sync_enabled.unwrap_or(false),
        authentication_type: auth_type.to_owned(),
        app_scope: app_user.scope.clone(),
        app_status: app_user.status.clone(),
        app_immutable_id: app_user.immutable_id().map(str::to_owned),
    }
}

/// Reads a batch's plans share: the app's group assignments and its provisioning feature are the
/// same for every user, so they are read once per batch instead of once per user (both are in
/// Okta's `/api/v1/apps/{id}` rate-limit bucket, the one a bulk repair exhausts first).
#[derive(Default)]
pub(crate) struct SharedReads {
    app_groups: tokio::sync::OnceCell<Vec<crate::directory::okta::AppGroup>>,
    provisioning: tokio::sync::OnceCell<crate::directory::Reply<crate::directory::okta::Feature>>,
}

pub(crate) async fn make_plan(ctx: &Inner, req: &RepairRequest) -> Result<Plan, PlanError> {
    make_plan_with(ctx, req, None).await
}

pub(crate) async fn make_plan_with(
    ctx: &Inner,
    req: &RepairRequest,
    shared: Option<&SharedReads>,
) -> Result<Plan, PlanError> {
    let policy = &ctx.policy;
    let domain = req.upn.domain().to_ascii_lowercase();
    if !policy
        .allowed_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&domain))
    {
        return Err(Refusal::DomainNotAllowed {
            domain,
            allowed: policy.allowed_domains.clone(),
        }
        .into());
    }
    let is_protected = |upn: &Upn| {
        policy
            .protected_users
            .iter()
            .filter_map(|p| Upn::parse(p).ok())
            .any(|p| p == *upn)
    };
    if is_protected(&req.upn) {
        return Err(Refusal::Protected {
            upn: req.upn.to_string(),
        }
        .into());
    }

    if let Some(run) = ctx.locks.holder_by_upn(&req.upn) {
        return Err(Refusal::AlreadyRunning { run }.into());
    }

    let candidate = req
        .immutable_id
        .clone()
        .unwrap_or_else(ImmutableId::generate);
    let login = req.upn.as_str();
    // The app's profile rules (the schema, and the mappings: a list, then each mapping, one
    // after the other) depend on nothing else: they run beside both batches of reads instead of
    // inside the first, and the client reuses them briefly across plans.
    let okta = ctx.okta.clone();
    let profile_rules = tokio::spawn(async move { okta.app_profile_rules().await });
    let (entra, dom, initial, okta_user, app_groups, feature, holders) = tokio::join!(
        ctx.graph.user_by_upn(&req.upn),
        ctx.graph.domain(&domain),
        ctx.graph.initial_domain(),
        ctx.okta.user(login),
        async {
            match shared {
                Some(sh) => sh
                    .app_groups
                    .get_or_try_init(|| async { ctx.okta.app_groups().await.map(|r| r.value) })
                    .await
                    .map(|g| crate::directory::Reply {
                        value: g.clone(),
                        request_id: None,
                    }),
                None => ctx.okta.app_groups().await,
            }
        },
        async {
            match shared {
                Some(sh) => sh
                    .provisioning
                    .get_or_try_init(|| ctx.okta.provisioning())
                    .await
                    .cloned(),
                None => ctx.okta.provisioning().await,
            }
        },
        ctx.graph.users_with_immutable_id(&candidate),
    );
    let entra = entra
        .map_err(graph_err)?
        .value
        .ok_or_else(|| Refusal::NotInEntra {
            upn: req.upn.to_string(),
        })?;
    let dom = dom
        .map_err(graph_err)?
        .value
        .ok_or_else(|| Refusal::DomainNotInTenant {
            domain: domain.clone(),
        })?;
    let entra_id = EntraObjectId::parse(&entra.id)
        .map_err(|e| PlanError::Internal(format!("Graph returned a bad object id: {e}")))?;
    let upn = Upn::parse(&entra.user_principal_name)
        .map_err(|e| PlanError::Internal(format!("Graph returned a bad UPN: {e}")))?;
    if is_protected(&upn) {
        return Err(Refusal::Protected {
            upn: upn.to_string(),
        }
        .into());
    }
    if entra.on_premises_sync_enabled == Some(true) {
        return Err(Refusal::Synced {
            upn: upn.to_string(),
        }
        .into());
    }
    if let Some(run) = ctx.locks.holder(&entra_id) {
        return Err(Refusal::AlreadyRunning { run }.into());
    }

    // Identify the Okta side once: by login, or by the Office 365 username where they differ.
    let okta_user = okta_user.map_err(okta_err)?.value;
    let (okta_user_id, okta_login, app_user_hint) = match okta_user {
        Some(u) => {
            let login = u.login().unwrap_or(login).to_owned();
            (u.id, login, None)
        }
        None => {
            let by_name = ctx
                .okta
                .app_user_by_user_name(upn.as_str())
                .await
                .map_err(okta_err)?
                .value
                .ok_or_else(|| Refusal::NotInOkta {
                    upn: upn.to_string(),
                })?;
            let u = ctx
                .okta
                .user(&by_name.id)
                .await
                .map_err(okta_err)?
                .value
                .ok_or_else(|| Refusal::NotInOkta {
                    upn: upn.to_string(),
                })?;
            let login = u.login().unwrap_or_default().to_owned();
            (u.id, login, Some(by_name))
        }
    };
    let okta_user_id = OktaUserId::parse(&okta_user_id)
        .map_err(|e| PlanError::Internal(format!("Okta returned a bad user id: {e}")))?;

    let temporary_upn = if dom.is_federated() {
        let initial = initial.map_err(graph_err)?.value;
        if initial.is_empty() {
            return Err(Refusal::NoInitialDomain.into());
        }
        Some(
            upn.with_domain(&initial)
                .map_err(|e| PlanError::Internal(format!("temporary UPN: {e}")))?,
        )
    } else {
        None
    };

    let (roles, app_user, user_groups, temp_holder) = tokio::join!(
        ctx.graph.directory_roles(&entra_id),
        async {
            match &app_user_hint {
                Some(a) => Ok(crate::directory::Reply {
                    value: Some(a.clone()),
                    request_id: None,
                }),
                None => ctx.okta.app_user(&okta_user_id).await,
            }
        },
        ctx.okta.user_groups(&okta_user_id),
        async {
            match &temporary_upn {
                Some(t) => ctx.graph.user_by_upn(t).await.map(|r| r.value),
                None => Ok(None),
            }
        },
    );
    let roles = roles.map_err(graph_err)?.value;
    if !roles.is_empty() && !policy.allow_admin_targets {
        return Err(Refusal::DirectoryRole {
            roles: roles
                .iter()
                .filter_map(|r| r.name())
                .map(str::to_owned)
                .collect(),
            unnamed: roles.iter().filter(|r| r.name().is_none()).count(),
        }
        .into());
    }
    let app_user = app_user
        .map_err(okta_err)?
        .value
        .ok_or_else(|| Refusal::NotAssigned {
            upn: upn.to_string(),
        })?;
    let app_groups = app_groups.map_err(okta_err)?.value;
    let user_groups = user_groups.map_err(okta_err)?.value;
    let granting: Vec<String> = user_groups
        .iter()
        .filter(|g| app_groups.iter().any(|a| a.id == g.id))
        .map(|g| {
            g.profile
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or(&g.id)
                .to_owned()
        })
        .collect();
    if !granting.is_empty() || app_user.scope.eq_ignore_ascii_case("GROUP") {
        let groups = if granting.is_empty() {
            vec!["(a group assignment)".to_owned()]
        } else {
            granting
        };
        return Err(Refusal::GroupGranted { groups }.into());
    }
    if let Some(t) = temp_holder.map_err(graph_err)? {
        if !t.id.eq_ignore_ascii_case(entra_id.as_str()) {
            return Err(Refusal::TemporaryUpnTaken {
                upn: t.user_principal_name,
            }
            .into());
        }
    }

    let feature = feature.map_err(|e| Refusal::ProvisioningUnavailable {
        detail: e.to_string(),
    })?;
    if !feature.value.status.eq_ignore_ascii_case("ENABLED") {
        return Err(Refusal::ProvisioningUnavailable {
            detail: format!("feature status {}", feature.value.status),
        }
        .into());
    }

    let profile_rules = profile_rules
        .await
        .map_err(|e| {
            PlanError::Internal(format!(
                "reading the app user schema and profile mappings stopped: {e}"
            ))
        })?
        .map_err(okta_err)?
        .value;
    let mappings = &profile_rules.mappings;
    // Sorted and unique: the map's keys.
    let mapped_properties: Vec<String> = profile_rules.mapped().into_keys().collect();
    let mapping = mappings.iter().find_map(|m| {
        m.properties
            .get("immutableId")
            .and_then(|p| p.get("expression"))
            .and_then(|e| e.as_str())
            .map(|e| (m.id.clone(), e.to_owned()))
    });

    let mut notes = Vec::new();
    // The candidate's holders were read concurrently above; any other value is read when needed.
    let mut candidate_holders = Some(holders);
    let mut holders_of = async |id: &ImmutableId| -> Result<Vec<EntraUser>, PlanError> {
        match candidate_holders.take() {
            Some(h) if *id == candidate => Ok(h.map_err(graph_err)?.value),
            _ => Ok(ctx
                .graph
                .users_with_immutable_id(id)
                .await
                .map_err(graph_err)?
                .value),
        }
    };
    let others = |holders: &[EntraUser]| {
        holders
            .iter()
            .find(|u| !u.id.eq_ignore_ascii_case(entra_id.as_str()))
            .map(|u| u.user_principal_name.clone())
    };
    let (new_id, source, mode, mode_why) = match mapping {
        Some((mapping_id, expression)) => {
            if req.mode == ModeChoice::Full {
                return Err(Refusal::MappedForbidsFull { expression }.into());
            }
            let okta_value = app_user.immutable_id().map(str::to_owned).ok_or_else(|| {
                Refusal::MappedButEmpty {
                    expression: expression.clone(),
                }
            })?;
            let value =
                ImmutableId::parse_value(&okta_value).map_err(|e| Refusal::InvalidOktaValue {
                    value: okta_value.clone(),
                    problem: e.to_string(),
                })?;
            if let Some(given) = &req.immutable_id {
                if *given != value {
                    return Err(Refusal::MappedConflict {
                        given: given.to_string(),
                        okta: okta_value,
                        expression,
                    }
                    .into());
                }
            }
            if entra.on_premises_immutable_id.as_deref() == Some(value.as_str()) {
                return Err(Refusal::NothingToDo { id: okta_value }.into());
            }
            if let Some(holder) = others(&holders_of(&value).await?) {
                return Err(Refusal::IdTaken {
                    id: value.to_string(),
                    holder,
                }
                .into());
            }
            notes.push(format!(
                "For a fresh value, change Okta's mapping (id {mapping_id}) first."
            ));
            let why = format!(
                "Entra-only: Okta fills immutableId from the mapping `{expression}`, so its value is authoritative (Okta would overwrite any other). Entra is set to the value Okta already sends; Okta is not touched and provisioning is not paused."
            );
            (
                value,
                NewIdSource::OktaMapping {
                    mapping_id,
                    expression,
                },
                RepairMode::EntraOnly,
                why,
            )
        }
        None => {
            let entra_only = match req.mode {
                ModeChoice::Full => Err("mode:full was asked for.".to_owned()),
                ModeChoice::Smallest | ModeChoice::EntraOnly => {
                    match okta_value_to_keep(&app_user, &entra_id, req.immutable_id.as_ref()) {
                        Ok(value) => match others(&holders_of(&value).await?) {
                            Some(holder) => Err(format!(
                                "Okta's value {value} already belongs to {holder} in Entra, and ImmutableIDs are unique in the tenant."
                            )),
                            None => Ok(value),
                        },
                        Err(why) => Err(why),
                    }
                }
            };
            match entra_only {
                Ok(value) => {
                    if entra.on_premises_immutable_id.as_deref() == Some(value.as_str()) {
                        return Err(Refusal::AlreadyAgree {
                            id: value.to_string(),
                        }
                        .into());
                    }
                    if app_user
                        .sync_state
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("ERROR"))
                    {
                        notes.push("Okta's last push for this user failed (syncState ERROR): after the repair, retry the failed task in Okta (Dashboard → Tasks), or wait for the next profile push.".into());
                    }
                    let why = format!(
                        "Entra-only: Okta already sends {value} on a direct assignment linked to this Entra user, and no other Entra user holds it. Entra is set to that value; Okta is not touched and provisioning is not paused. Ask with mode:full for a new value in both systems."
                    );
                    (value, NewIdSource::OktaValue, RepairMode::EntraOnly, why)
                }
                Err(why) if req.mode == ModeChoice::EntraOnly => {
                    return Err(Refusal::EntraOnlyNotApplicable { why }.into());
                }
                Err(why) => {
                    let source = if req.immutable_id.is_some() {
                        NewIdSource::GivenByRequester
                    } else {
                        NewIdSource::Generated
                    };
                    let why = format!(
                        "Full repair: {why} The seed's procedure gives both systems a new value."
                    );
                    let mut new_id = candidate.clone();
                    if let Some(holder) = others(&holders_of(&new_id).await?) {
                        if source == NewIdSource::Generated {
                            // A random GUID clashing is astronomically unlikely; draw again
                            // rather than refuse.
                            new_id = fresh_unique_id(ctx).await?;
                        } else {
                            return Err(Refusal::IdTaken {
                                id: new_id.to_string(),
                                holder,
                            }
                            .into());
                        }
                    }
                    (new_id, source, RepairMode::Full, why)
                }
            }
        }
    };

    if entra.on_premises_immutable_id.is_some()
        && entra.on_premises_immutable_id == app_user.immutable_id().map(str::to_owned)
        && mode == RepairMode::Full
    {
        notes.push(
            "Entra and Okta already agree; the repair re-links the user with a fresh value.".into(),
        );
    }

    // Only a full repair reassigns, and so only it has a profile to carry over.
    let carry_over = match mode {
        RepairMode::EntraOnly => None,
        RepairMode::Full => Some(carry_over(&app_user.profile, &profile_rules, true).map_err(
            |problems| Refusal::ProfileNotCarried {
                problems: problems.iter().map(ToString::to_string).collect(),
            },
        )?),
    };

    let facts = facts_of(&entra, &dom.authentication_type, &app_user);
    let fingerprint = facts.fingerprint();
    Ok(Plan {
        run: RunId::new(),
        requester: req.requester.clone(),
        reason: req.reason.clone(),
        federated: dom.is_federated(),
        upn,
        entra_id,
        okta_user_id,
        okta_login,
        temporary_upn,
        entra_immutable_id_before: entra.on_premises_immutable_id.clone(),
        app_user_before: app_user,
        new_immutable_id: new_id,
        new_id_source: source,
        mode,
        provisioning_before: feature.value.capabilities,
        mapped_properties,
        carry_over,
        mode_why,
        batch: None,
        notes,
        facts,
        fingerprint,
    })
}

/// Okta's value on the assignment, when Entra can simply take it: set, valid, the one asked for
/// (if any), and on an assignment already linked to this Entra user. Otherwise why not, in a
/// sentence. Uniqueness in the tenant is the caller's read.
pub(crate) fn okta_value_to_keep(
    app_user: &AppUser,
    entra_id: &EntraObjectId,
    given: Option<&ImmutableId>,
) -> Result<ImmutableId, String> {
    let Some(v) = app_user.immutable_id() else {
        return Err("Okta holds no ImmutableID for the user, so there is no value to keep.".into());
    };
    let value = ImmutableId::parse_value(v)
        .map_err(|e| format!("Okta holds `{v}`, which Entra cannot take ({e})."))?;
    if given.is_some_and(|g| *g != value) {
        return Err(
            "the value asked for differs from Okta's, so Okta must be reassigned with it.".into(),
        );
    }
    // Okta keeps the Entra object id it linked the assignment to in `externalId`; without that
    // link, setting Entra alone leaves Okta pushing to nobody, and only a reassignment links.
    match app_user.external_id.as_deref() {
        Some(x) if x.eq_ignore_ascii_case(entra_id.as_str()) => Ok(value),
        Some(x) => Err(format!(
            "Okta's assignment is linked to another Entra object ({x}); only a reassignment links it to this user."
        )),
        None => Err(
            "Okta's assignment is not linked to an Entra user yet (no externalId); only a reassignment links it.".into(),
        ),
    }
}

/// A generated value no user holds yet.
pub(crate) async fn fresh_unique_id(ctx: &Inner) -> Result<ImmutableId, PlanError> {
    for _ in 0..5 {
        let id = ImmutableId::generate();
        let holders = ctx
            .graph
            .users_with_immutable_id(&id)
            .await
            .map_err(graph_err)?
            .value;
        if holders.is_empty() {
            return Ok(id);
        }
    }
    Err(PlanError::Internal(
        "five generated ImmutableIDs in a row were taken".into(),
    ))
}

/// Re-reads the facts the approval bound to; `Some(what changed)` when the world moved.
pub(crate) async fn stale_check(ctx: &Inner, plan: &Plan) -> Result<Option<String>, PlanError> {
    let (user, app_user) = tokio::join!(
        ctx.graph.user_by_id(&plan.entra_id),
        ctx.okta.app_user(&plan.okta_user_id)
    );
    let Some(user) = user.map_err(graph_err)?.value else {
        return Ok(Some("the Entra user no longer exists".into()));
    };
    let Some(app_user) = app_user.map_err(okta_err)?.value else {
        return Ok(Some(
            "the user is no longer assigned to Office 365 in Okta".into(),
        ));
    };
    let domain = Upn::parse(&user.user_principal_name)
        .map(|u| u.domain().to_ascii_lowercase())
        .unwrap_or_default();
    let auth = if domain.eq_ignore_ascii_case(plan.upn.domain()) {
        plan.facts.authentication_type.clone()
    } else {
        ctx.graph
            .domain(&domain)
            .await
            .map_err(graph_err)?
            .value
            .map(|d| d.authentication_type)
            .unwrap_or_default()
    };
    let now = facts_of(&user, &auth, &app_user);
    if now.fingerprint() == plan.fingerprint {
        return Ok(None);
    }
    Ok(Some(describe_change(&plan.facts, &now)))
}

fn describe_change(a: &Facts, b: &Facts) -> String {
    let mut changes = Vec::new();
    let mut cmp = |name: &str, x: String, y: String| {
        if x != y {
            changes.push(format!("{name}: {x} → {y}"));
        }
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "<none>".into());
    cmp("UPN", a.upn.clone(), b.upn.clone());
    cmp(
        "Entra ImmutableID",
        opt(&a.entra_immutable_id),
        opt(&b.entra_immutable_id),
    );
    cmp("synced", a.synced.to_string(), b.synced.to_string());
    cmp(
        "domain type",
        a.authentication_type.clone(),
        b.authentication_type.clone(),
    );
    cmp("Okta scope", a.app_scope.clone(), b.app_scope.clone());
    cmp("Okta status", a.app_status.clone(), b.app_status.clone());
    cmp(
        "Okta ImmutableID",
        opt(&a.app_immutable_id),
        opt(&b.app_immutable_id),
    );
    changes.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_reason_holds_no_invisible_characters() {
        let req = RepairRequest::parse(
            Actor::new("1", "alice"),
            "adele@contoso.com",
            None,
            Some(" INC-1 \u{202E}evitucexe yb devorppa\u{202C}\u{200B} "),
        )
        .unwrap();
        assert_eq!(req.reason.as_deref(), Some("INC-1 evitucexe yb devorppa"));
        let only_invisible = RepairRequest::parse(
            Actor::new("1", "alice"),
            "adele@contoso.com",
            None,
            Some("\u{202E}\u{2066}\u{FEFF}"),
        )
        .unwrap();
        assert_eq!(
            only_invisible.reason, None,
            "an invisible reason is no reason"
        );
    }
}
