//! Bare wasmtime for the benchmarks' baselines, on its fastest path: WASI 0.2
//! and `wasi:http` linked (the latter refusing every request), Cairn's own
//! imports linked as traps (the guests' echo paths never call them), the component pre-instantiated and its `run` export resolved
//! once ([`BarePre`]), and `run` called as a typed function, the way
//! `bindgen!`'s generated bindings (and so Cairn) call it.

#![allow(dead_code)] // each bench uses its own part of this

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, InstancePre, Lift, Linker, ResourceTable, ResourceType, TypedFunc,
};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The store data of a bare instance.
pub struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: NoRequests,
}

impl Bare {
    /// A fresh, empty WASI context.
    pub fn new() -> Self {
        Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: NoRequests,
        }
    }
}

/// `wasi:http` hooks that send nothing.
struct NoRequests;

type Sent = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for NoRequests {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Sent {
        Box::new(std::future::ready(Err(wasmtime_wasi_http::Error::HttpRequestDenied)))
    }
}

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
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

/// `cairn:task/types.task-error`, lifted by the typed call.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
pub struct TaskError {
    kind: String,
    message: String,
    retryable: bool,
}

/// The world's export `run: func(input: string) -> result<string, task-error>`, typed.
pub type RunFn = TypedFunc<(&'static str,), (Result<String, TaskError>,)>;

/// A component ready to instantiate, with its `run` export resolved once.
pub struct BarePre {
    pre: InstancePre<Bare>,
    run: ComponentExportIndex,
}

impl BarePre {
    /// `component` pre-instantiated (see [`bare_pre`]) and `run` looked up.
    pub fn new(engine: &Engine, component: &Component) -> BarePre {
        let run = component.get_export_index(None, "run").expect("the guest exports run");
        BarePre { pre: bare_pre(engine, component), run }
    }

    /// The engine it instantiates in.
    pub fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    /// A new instance in `store` and its typed `run` (type-checked once per
    /// instance by the export index, as generated bindings do; no name lookup).
    pub async fn instantiate(&self, store: &mut Store<Bare>) -> RunFn {
        let instance = self.pre.instantiate_async(&mut *store).await.unwrap();
        instance.get_typed_func(&mut *store, self.run).expect("run has the world's type")
    }
}

/// `component` pre-instantiated with WASI, `wasi:http` and trapping stubs for `cairn:task/*`.
pub fn bare_pre(engine: &Engine, component: &Component) -> InstancePre<Bare> {
    let mut linker: Linker<Bare> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
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
pub async fn call_echo(store: &mut Store<Bare>, run: &RunFn) {
    let (result,) = run.call_async(&mut *store, (ECHO,)).await.unwrap();
    assert!(result.is_ok(), "echo failed: {result:?}");
}

/// Bare fresh instance per call: store, instantiate, typed call, drop.
pub async fn fresh_call(pre: &BarePre) {
    let mut store = new_store(pre.engine());
    let run = pre.instantiate(&mut store).await;
    call_echo(&mut store, &run).await;
}
