//! Walking a module's float parameters by their dotted path (`blocks.0.qkv.weight`).
//!
//! burn's own optimiser state is keyed by random `ParamId`s, which a rebuilt model does not
//! share (docs/burn-0.22-notes.md §6); everything here that outlives a process (optimiser moments,
//! EMA, checkpoints) is keyed by path instead.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor};

/// The path component a module adds: its field name, or nothing for the variant of an enum
/// module (`model::Network`), so a parameter's path is the same whether the network is held
/// directly or through the enum. Empty parts are dropped when a path is joined.
fn path_part(name: &str, container: &str) -> String {
    if container.starts_with("Enum:") {
        String::new()
    } else {
        name.to_string()
    }
}

/// Joins the non-empty parts of a module path with dots.
fn join_path(parts: &[String]) -> String {
    let kept: Vec<&str> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(String::as_str)
        .collect();
    kept.join(".")
}

/// One float parameter, flattened, without autodiff.
#[derive(Debug, Clone)]
pub struct NamedParam {
    pub path: String,
    pub id: ParamId,
    pub shape: Vec<usize>,
    pub value: Tensor<1>,
}

/// Every float parameter of `module`, in visiting order, flattened and detached.
pub fn named_params<M: Module>(module: &M) -> Vec<NamedParam> {
    struct Collect {
        path: Vec<String>,
        out: Vec<NamedParam>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.push(path_part(name, container));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val().inner();
            let shape = t.dims().to_vec();
            let n: usize = shape.iter().product();
            self.out.push(NamedParam {
                path: join_path(&self.path),
                id: p.id,
                shape,
                value: t.reshape([n]),
            });
        }
    }
    let mut c = Collect {
        path: vec![],
        out: vec![],
    };
    module.visit(&mut c);
    c.out
}

/// Replaces parameters by path: `f(path, current_flat)` returns the new flat value (or `None`
/// to keep the parameter). The result keeps each parameter's id, device, autodiff and
/// `require_grad` state.
pub fn map_params<M: Module>(
    module: M,
    f: &mut dyn FnMut(&str, Tensor<1>) -> Option<Tensor<1>>,
) -> M {
    struct Map<'a> {
        path: Vec<String>,
        f: &'a mut dyn FnMut(&str, Tensor<1>) -> Option<Tensor<1>>,
    }
    impl ModuleMapper for Map<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.push(path_part(name, container));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path = join_path(&self.path);
            let f = &mut self.f;
            p.map(|t| {
                let dims = t.dims();
                let (autodiff, grad) = (t.is_autodiff(), t.is_require_grad());
                let flat = t.clone().inner().reshape([dims.iter().product::<usize>()]);
                match f(&path, flat) {
                    None => t,
                    Some(new) => {
                        let new = new.reshape(dims);
                        match (autodiff, grad) {
                            (true, true) => new.autodiff().require_grad(),
                            (true, false) => new.autodiff(),
                            _ => new,
                        }
                    }
                }
            })
        }
    }
    module.map(&mut Map { path: vec![], f })
}

/// Touches every parameter once so that lazily initialised ones draw their values now, in a
/// fixed order (burn initialisers are lazy; docs/burn-0.22-notes.md §5).
pub fn materialize<M: Module>(module: &M) {
    let _ = named_params(module);
}

/// The gradient of every parameter that has one, flattened, by path.
pub fn grads_by_path<M: Module>(module: &M, grads: &Gradients) -> HashMap<String, Tensor<1>> {
    struct Collect<'a> {
        path: Vec<String>,
        grads: &'a Gradients,
        out: HashMap<String, Tensor<1>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.push(path_part(name, container));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = p.val().grad(self.grads) {
                let n: usize = g.dims().iter().product();
                self.out.insert(join_path(&self.path), g.reshape([n]));
            }
        }
    }
    let mut c = Collect {
        path: vec![],
        grads,
        out: HashMap::new(),
    };
    module.visit(&mut c);
    c.out
}

/// Flat values by path.
pub fn params_by_path<M: Module>(module: &M) -> HashMap<String, Tensor<1>> {
    named_params(module)
        .into_iter()
        .map(|p| (p.path, p.value))
        .collect()
}
