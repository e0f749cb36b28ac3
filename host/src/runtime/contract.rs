//! The contract versions this host loads components of, and the one difference between them that
//! the host sees: 0.2.0 added `ranking.propensities`.
//!
//! A component names its contract version in its export (`relish:policy/policy@0.2.0`); every
//! import must be of that same version. Components of the current version are called through the
//! bindings `bindgen!` generates from `wit/policy.wit`. A 0.1.0 component (`wit/0.1.0/policy.wit`,
//! frozen) takes the very same request value, since the request's types did not change (the
//! component model checks types by structure, not by name, so the current bindings' `Request`
//! lowers into a 0.1.0 component unchanged, without a copy): only its answer is lifted into a
//! record of its own ([`RankingV0_1`]) and turned into the current one, with no propensities.

use wasmtime::component::{ComponentExportIndex, ComponentType, Func, InstancePre, Lift, TypedFunc};
use wasmtime::{AsContextMut, Store};

use super::imports::CallState;
use super::types;

/// A version of the `relish:policy` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    /// `relish:policy@0.2.0`, the current one.
    V0_2,
    /// `relish:policy@0.1.0`: no propensities.
    V0_1,
}

impl Contract {
    /// Every version this host loads, newest first.
    pub const ALL: [Contract; 2] = [Contract::V0_2, Contract::V0_1];

    /// The package name and version, `relish:policy@0.2.0`.
    pub fn name(self) -> &'static str {
        match self {
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
            Contract::V0_2 => "relish:policy/policy@0.2.0",
            Contract::V0_1 => "relish:policy/policy@0.1.0",
        }
    }

    /// The interfaces a policy of this version may import: the contract's own, nothing else.
    pub(super) fn imports(self) -> [&'static str; 2] {
        match self {
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

/// The names of every served contract, for messages: `relish:policy@0.2.0 and relish:policy@0.1.0`.
pub(super) fn served() -> String {
    Contract::ALL.map(Contract::name).join(" and ")
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

type RankV0_1<'a> = TypedFunc<(&'a types::Request,), (Result<RankingV0_1, types::RankError>,)>;
type DescribeV0_1 = TypedFunc<(), (types::Metadata,)>;

/// A pre-instantiated 0.1.0 component, its exports found and type-checked once, at load.
#[derive(Clone)]
pub(super) struct PreV0_1 {
    pre: InstancePre<CallState>,
    rank: ComponentExportIndex,
    describe: ComponentExportIndex,
}

impl PreV0_1 {
    /// Finds and type-checks `rank` and `describe`, as the generated bindings do for 0.2.0.
    pub(super) fn new(pre: InstancePre<CallState>) -> wasmtime::Result<Self> {
        use wasmtime::component::types::ComponentItem;
        let component = pre.component();
        let ty = pre.instance_type();
        let (_, policy) = component
            .get_export(None, Contract::V0_1.export())
            .ok_or_else(|| wasmtime::format_err!("no export `{}`", Contract::V0_1.export()))?;
        let func = |name: &str| -> wasmtime::Result<(ComponentItem, ComponentExportIndex)> {
            component.get_export(Some(&policy), name).ok_or_else(|| wasmtime::format_err!("no export `{name}`"))
        };
        let (rank_item, rank) = func("rank")?;
        let (describe_item, describe) = func("describe")?;
        match rank_item {
            ComponentItem::ComponentFunc(f) => {
                f.typecheck::<(&types::Request,), (Result<RankingV0_1, types::RankError>,)>(&ty)?
            }
            _ => wasmtime::bail!("export `rank` is not a function"),
        }
        match describe_item {
            ComponentItem::ComponentFunc(f) => f.typecheck::<(), (types::Metadata,)>(&ty)?,
            _ => wasmtime::bail!("export `describe` is not a function"),
        }
        Ok(PreV0_1 { pre, rank, describe })
    }

    pub(super) fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<ExportsV0_1> {
        let instance = self.pre.instantiate(&mut *store)?;
        let rank = instance.get_func(&mut *store, self.rank).ok_or_else(|| wasmtime::format_err!("no `rank`"))?;
        let describe =
            instance.get_func(&mut *store, self.describe).ok_or_else(|| wasmtime::format_err!("no `describe`"))?;
        Ok(ExportsV0_1 { rank, describe })
    }
}

/// A 0.1.0 instance's exports.
pub(super) struct ExportsV0_1 {
    rank: Func,
    describe: Func,
}

impl ExportsV0_1 {
    pub(super) fn call_rank(
        &self,
        store: impl AsContextMut<Data = CallState>,
        request: &types::Request,
    ) -> wasmtime::Result<Result<types::Ranking, types::RankError>> {
        // SAFETY: `PreV0_1::new` type-checked this export of this component against exactly
        // these types; the generated bindings do the same for 0.2.0.
        #[expect(unsafe_code, reason = "the export was type-checked when the component was loaded")]
        let rank: RankV0_1<'_> = unsafe { TypedFunc::new_unchecked(self.rank) };
        let (answer,) = rank.call(store, (request,))?;
        Ok(answer.map(types::Ranking::from))
    }

    pub(super) fn call_describe(
        &self,
        store: impl AsContextMut<Data = CallState>,
    ) -> wasmtime::Result<types::Metadata> {
        // SAFETY: as in `call_rank`.
        #[expect(unsafe_code, reason = "the export was type-checked when the component was loaded")]
        let describe: DescribeV0_1 = unsafe { TypedFunc::new_unchecked(self.describe) };
        Ok(describe.call(store, ())?.0)
    }
}
