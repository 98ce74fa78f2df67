//! Bare wasmtime for the benchmarks' baselines: WASI 0.2 linked, Cairn's own
//! imports linked as traps (the guests' echo paths never call them), nothing else.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Func, InstancePre, Linker, ResourceTable, ResourceType, Val};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The store data of a bare instance.
pub struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl Bare {
    /// A fresh, empty WASI context.
    pub fn new() -> Self {
        Bare { wasi: WasiCtx::builder().build(), table: ResourceTable::new() }
    }
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Stand-in host type of `cairn:task/tasks.pending`.
struct PendingStub;
/// Stand-in host type of `cairn:task/tasks.group`.
struct GroupStub;

/// `component` pre-instantiated with WASI and trapping stubs for `cairn:task/*`.
pub fn bare_pre(engine: &Engine, component: &Component) -> InstancePre<Bare> {
    let mut linker: Linker<Bare> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    for (name, item) in component.component_type().imports(engine) {
        if let (true, ComponentItem::ComponentInstance(instance)) = (name.starts_with("cairn:task/"), item.ty) {
            let mut stubs = linker.instance(name).unwrap();
            for (export, item) in instance.exports(engine) {
                match item.ty {
                    // Each imported resource type needs a host type of its own.
                    ComponentItem::Resource(_) => {
                        let ty = match export {
                            "pending" => ResourceType::host::<PendingStub>(),
                            "group" => ResourceType::host::<GroupStub>(),
                            other => panic!("the bare baseline does not know resource {other:?}"),
                        };
                        stubs.resource(export, ty, |_, _| Ok(())).unwrap();
                    }
                    _ => stubs
                        .func_new(export, |_, _, _, _| Err(wasmtime::format_err!("not linked in the bare baseline")))
                        .unwrap(),
                }
            }
        }
    }
    linker.instantiate_pre(component).unwrap()
}

/// The probes' cheapest input: `echo` returns it unchanged.
pub const ECHO: &str = r#"{"mode":"echo"}"#;

/// A fresh store with no deadline to speak of.
pub fn new_store(engine: &Engine) -> Store<Bare> {
    let mut store = Store::new(engine, Bare::new());
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// Calls `run` with [`ECHO`] and checks that it succeeded.
pub async fn call_echo(store: &mut Store<Bare>, run: &Func) {
    let mut results = [Val::Bool(false)];
    run.call_async(&mut *store, &[Val::String(ECHO.into())], &mut results).await.unwrap();
    assert!(matches!(&results[0], Val::Result(Ok(_))), "echo failed: {results:?}");
}
