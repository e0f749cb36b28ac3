//! The contract versions this host loads components of, and what differs between them as the
//! host sees it: 0.3.0 packed the request's lists of names and its context strings, 0.2.0 added
//! `ranking.propensities`.
//!
//! A component names its contract version in its export (`relish:policy/policy@0.3.0`); every
//! import must be of that same version. Components of the current version are called through the
//! bindings `bindgen!` generates from `wit/policy.wit`. A component of an older version
//! (`wit/0.2.0/policy.wit`, `wit/0.1.0/policy.wit`, frozen) is handed the request in its own
//! shape ([`RequestV0_2`]: the same values, borrowed from the current request, with the names as
//! lists of strings; 0.1.0's request has the same structure, and the component model checks
//! types by structure, not by name), and its answer is lifted as its version defines it: 0.2.0's
//! `ranking` is the current one, 0.1.0's ([`RankingV0_1`]) has no propensities.

use wasmtime::component::{ComponentExportIndex, ComponentType, Func, InstancePre, Lift, Lower, TypedFunc};
use wasmtime::{AsContextMut, Store};

use super::imports::CallState;
use super::types;

/// A version of the `relish:policy` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    /// `relish:policy@0.3.0`, the current one.
    V0_3,
    /// `relish:policy@0.2.0`: names as lists of strings, context strings one by one.
    V0_2,
    /// `relish:policy@0.1.0`: as 0.2.0, and no propensities.
    V0_1,
}

impl Contract {
    /// Every version this host loads, newest first.
    pub const ALL: [Contract; 3] = [Contract::V0_3, Contract::V0_2, Contract::V0_1];

    /// The package name and version, `relish:policy@0.3.0`.
    pub fn name(self) -> &'static str {
        match self {
            Contract::V0_3 => "relish:policy@0.3.0",
            Contract::V0_2 => "relish:policy@0.2.0",
            Contract::V0_1 => "relish:policy@0.1.0",
        }
    }

    /// The contract named `name`, if this host serves it.
    pub fn from_name(name: &str) -> Option<Contract> {
        Contract::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The interface every policy of this version exports.
    pub(super) fn export(self) -> &'static str {
        match self {
            Contract::V0_3 => "relish:policy/policy@0.3.0",
            Contract::V0_2 => "relish:policy/policy@0.2.0",
            Contract::V0_1 => "relish:policy/policy@0.1.0",
        }
    }

    /// The interfaces a policy of this version may import: the contract's own, nothing else.
    pub(super) fn imports(self) -> [&'static str; 2] {
        match self {
            Contract::V0_3 => ["relish:policy/types@0.3.0", "relish:policy/host@0.3.0"],
            Contract::V0_2 => ["relish:policy/types@0.2.0", "relish:policy/host@0.2.0"],
            Contract::V0_1 => ["relish:policy/types@0.1.0", "relish:policy/host@0.1.0"],
        }
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of every served contract, for messages: `relish:policy@0.3.0, relish:policy@0.2.0
/// and relish:policy@0.1.0`.
pub(super) fn served() -> String {
    let names = Contract::ALL.map(Contract::name);
    let (last, rest) = names.split_last().expect("at least one contract");
    if rest.is_empty() { (*last).to_owned() } else { format!("{} and {last}", rest.join(", ")) }
}

/// The `request` record of 0.2.0 and 0.1.0, borrowed from a current request: the strings of the
/// packed columns as lists (what lowering them costs is why 0.3.0 packed them).
#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct RequestV0_2<'a> {
    surface: &'a str,
    #[component(name = "request-id")]
    request_id: &'a str,
    #[component(name = "time-unix-ms")]
    time_unix_ms: i64,
    #[component(name = "local-minute-of-day")]
    local_minute_of_day: u16,
    #[component(name = "local-weekday")]
    local_weekday: types::Weekday,
    seed: u64,
    context: ContextV0_2<'a>,
    #[component(name = "user-features")]
    user_features: FeaturesV0_2<'a>,
    #[component(name = "tag-vocabulary")]
    tag_vocabulary: Vec<&'a str>,
    candidates: CandidatesV0_2<'a>,
    limit: u32,
    params: Vec<(&'a str, &'a str)>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct ContextV0_2<'a> {
    #[component(name = "user-id")]
    user_id: Option<&'a str>,
    country: Option<&'a str>,
    city: Option<&'a str>,
    locale: Option<&'a str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    device: Option<&'a str>,
    cart: CartV0_2<'a>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct CartV0_2<'a> {
    #[component(name = "item-ids")]
    item_ids: Vec<&'a str>,
    tags: &'a types::TagColumn,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct FeaturesV0_2<'a> {
    names: Vec<&'a str>,
    values: &'a [f32],
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct CandidatesV0_2<'a> {
    ids: &'a types::StringColumn,
    #[component(name = "feature-names")]
    feature_names: Vec<&'a str>,
    features: &'a [f32],
    tags: &'a types::TagColumn,
}

impl<'a> RequestV0_2<'a> {
    /// The request in the shape of 0.2.0 and 0.1.0.
    pub(super) fn of(r: &'a types::Request) -> Self {
        let c = &r.context;
        RequestV0_2 {
            surface: &r.surface,
            request_id: &r.request_id,
            time_unix_ms: r.time_unix_ms,
            local_minute_of_day: r.local_minute_of_day,
            local_weekday: r.local_weekday,
            seed: r.seed,
            context: ContextV0_2 {
                user_id: c.user_id(),
                country: c.country(),
                city: c.city(),
                locale: c.locale(),
                latitude: c.latitude,
                longitude: c.longitude,
                device: c.device(),
                cart: CartV0_2 { item_ids: c.cart.item_ids.iter().collect(), tags: &c.cart.tags },
            },
            user_features: FeaturesV0_2 {
                names: r.user_features.names.iter().collect(),
                values: &r.user_features.values,
            },
            tag_vocabulary: r.tag_vocabulary.iter().collect(),
            candidates: CandidatesV0_2 {
                ids: &r.candidates.ids,
                feature_names: r.candidates.feature_names.iter().collect(),
                features: &r.candidates.features,
                tags: &r.candidates.tags,
            },
            limit: r.limit,
            params: r.params.iter().collect(),
        }
    }
}

/// The `ranking` record of 0.1.0.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct RankingV0_1 {
    order: Vec<u32>,
    scores: Vec<f32>,
    reasons: Vec<u32>,
    #[component(name = "reason-codes")]
    reason_codes: Vec<String>,
}

impl From<RankingV0_1> for types::Ranking {
    fn from(raw: RankingV0_1) -> Self {
        let RankingV0_1 { order, scores, reasons, reason_codes } = raw;
        types::Ranking { order, scores, reasons, reason_codes, propensities: Vec::new() }
    }
}

type RankV0_2<'a> = TypedFunc<(RequestV0_2<'a>,), (Result<types::Ranking, types::RankError>,)>;
type RankV0_1<'a> = TypedFunc<(RequestV0_2<'a>,), (Result<RankingV0_1, types::RankError>,)>;
type Describe = TypedFunc<(), (types::Metadata,)>;

/// A pre-instantiated component of an older contract (0.2.0 or 0.1.0), its exports found and
/// type-checked once, at load.
#[derive(Clone)]
pub(super) struct PreLegacy {
    pre: InstancePre<CallState>,
    contract: Contract,
    rank: ComponentExportIndex,
    describe: ComponentExportIndex,
}

impl PreLegacy {
    /// Finds and type-checks `rank` and `describe` of `contract`'s export, as the generated
    /// bindings do for the current version.
    pub(super) fn new(pre: InstancePre<CallState>, contract: Contract) -> wasmtime::Result<Self> {
        use wasmtime::component::types::ComponentItem;
        assert_ne!(contract, Contract::V0_3, "the current contract goes through the generated bindings");
        let component = pre.component();
        let ty = pre.instance_type();
        let (_, policy) = component
            .get_export(None, contract.export())
            .ok_or_else(|| wasmtime::format_err!("no export `{}`", contract.export()))?;
        let func = |name: &str| -> wasmtime::Result<(ComponentItem, ComponentExportIndex)> {
            component.get_export(Some(&policy), name).ok_or_else(|| wasmtime::format_err!("no export `{name}`"))
        };
        let (rank_item, rank) = func("rank")?;
        let (describe_item, describe) = func("describe")?;
        match (rank_item, contract) {
            (ComponentItem::ComponentFunc(f), Contract::V0_1) => {
                f.typecheck::<(RequestV0_2<'_>,), (Result<RankingV0_1, types::RankError>,)>(&ty)?
            }
            (ComponentItem::ComponentFunc(f), _) => {
                f.typecheck::<(RequestV0_2<'_>,), (Result<types::Ranking, types::RankError>,)>(&ty)?
            }
            _ => wasmtime::bail!("export `rank` is not a function"),
        }
        match describe_item {
            ComponentItem::ComponentFunc(f) => f.typecheck::<(), (types::Metadata,)>(&ty)?,
            _ => wasmtime::bail!("export `describe` is not a function"),
        }
        Ok(PreLegacy { pre, contract, rank, describe })
    }

    pub(super) fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<ExportsLegacy> {
        let instance = self.pre.instantiate(&mut *store)?;
        let rank = instance.get_func(&mut *store, self.rank).ok_or_else(|| wasmtime::format_err!("no `rank`"))?;
        let describe =
            instance.get_func(&mut *store, self.describe).ok_or_else(|| wasmtime::format_err!("no `describe`"))?;
        Ok(ExportsLegacy { contract: self.contract, rank, describe })
    }
}

/// An instance's exports, of an older contract.
pub(super) struct ExportsLegacy {
    contract: Contract,
    rank: Func,
    describe: Func,
}

impl ExportsLegacy {
    pub(super) fn call_rank(
        &self,
        store: impl AsContextMut<Data = CallState>,
        request: &types::Request,
    ) -> wasmtime::Result<Result<types::Ranking, types::RankError>> {
        let request = RequestV0_2::of(request);
        if self.contract == Contract::V0_1 {
            // SAFETY: `PreLegacy::new` type-checked this export of this component against exactly
            // these types; the generated bindings do the same for the current version.
            #[expect(unsafe_code, reason = "the export was type-checked when the component was loaded")]
            let rank: RankV0_1<'_> = unsafe { TypedFunc::new_unchecked(self.rank) };
            let (answer,) = rank.call(store, (request,))?;
            return Ok(answer.map(types::Ranking::from));
        }
        // SAFETY: as above, for 0.2.0's types.
        #[expect(unsafe_code, reason = "the export was type-checked when the component was loaded")]
        let rank: RankV0_2<'_> = unsafe { TypedFunc::new_unchecked(self.rank) };
        Ok(rank.call(store, (request,))?.0)
    }

    pub(super) fn call_describe(
        &self,
        store: impl AsContextMut<Data = CallState>,
    ) -> wasmtime::Result<types::Metadata> {
        // SAFETY: as in `call_rank`.
        #[expect(unsafe_code, reason = "the export was type-checked when the component was loaded")]
        let describe: Describe = unsafe { TypedFunc::new_unchecked(self.describe) };
        Ok(describe.call(store, ())?.0)
    }
}
