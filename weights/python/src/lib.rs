//! `thaw_weights`, the Python module: load a model tag from thaw's store into GPU (or host)
//! memory with thaw-weights' streaming pipeline, then take each tensor into PyTorch (or NumPy,
//! JAX, CuPy) through DLPack, without a copy.
//!
//! ```python
//! import torch, thaw_weights
//! model = thaw_weights.load("llama-3-8b", device="cuda:0")
//! state_dict = {name: torch.from_dlpack(t) for name, t in model.items()}
//! print(model.report["tensor_bytes"], model.report["seconds"])
//! ```
//!
//! The store, caches and peers come from the same configuration as the `thaw` command
//! (thaw-client: the config file, then the `THAW_*` variables such as `THAW_STORE`,
//! `THAW_CACHE_DIR`, `THAW_PEERS`, `THAW_NO_DISK_CACHE`), unless given as arguments;
//! `thaw_weights.config()` shows what is in effect.

mod dlpack;

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use thaw_client::{connect, Config};
use weights::{Allocation, DeviceKind, LoadOptions, LoadedModel, PlacedTensor};

/// The configuration `thaw` would use here, with the `store` and `cache_dir` arguments applied.
fn resolve_config(store: Option<String>, cache_dir: Option<PathBuf>) -> Result<Config, String> {
    let mut config = Config::load(None).map_err(|e| e.to_string())?;
    if store.is_some() {
        config.store.url = store;
    }
    if cache_dir.is_some() {
        config.cache.dir = cache_dir;
    }
    Ok(config)
}

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// One tensor of a loaded model; hand it to `torch.from_dlpack` or `numpy.from_dlpack`.
#[pyclass(module = "thaw_weights", frozen)]
struct Tensor {
    allocation: Arc<dyn Allocation>,
    placed: PlacedTensor,
    file: String,
}

#[pymethods]
impl Tensor {
    /// Tensor name.
    #[getter]
    fn name(&self) -> &str {
        &self.placed.name
    }

    /// The safetensors file it came from.
    #[getter]
    fn file(&self) -> &str {
        &self.file
    }

    /// safetensors dtype (`BF16`, `F32`, ...).
    #[getter]
    fn dtype(&self) -> &str {
        &self.placed.dtype
    }

    /// Shape.
    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.placed.shape.clone()
    }

    /// Size in bytes.
    #[getter]
    fn nbytes(&self) -> u64 {
        self.placed.len
    }

    /// Address of the first byte (a device pointer on a GPU).
    #[getter]
    fn address(&self) -> u64 {
        self.allocation.address() + self.placed.offset
    }

    /// A copy of the bytes in host memory.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let range = self.placed.offset..self.placed.offset + self.placed.len;
        let bytes = self.allocation.read(range).map_err(runtime_error)?;
        Ok(pyo3::types::PyBytes::new(py, &bytes))
    }

    /// DLPack export (the data is complete when `load` returns, so any stream may use it).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        _args: &Bound<'_, pyo3::types::PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        dlpack::capsule(
            py,
            &self.placed.name,
            &self.allocation,
            self.placed.offset,
            &self.placed.dtype,
            &self.placed.shape,
        )
    }

    /// (device type, device id) as DLPack numbers them.
    fn __dlpack_device__(&self) -> (i32, i32) {
        dlpack::device_of(self.allocation.device())
    }

    fn __repr__(&self) -> String {
        format!(
            "<thaw_weights.Tensor {} {} {:?} on {}>",
            self.placed.name,
            self.placed.dtype,
            self.placed.shape,
            self.allocation.device()
        )
    }
}

/// A model in device (or host) memory: a read-only mapping of tensor name to [`Tensor`].
#[pyclass(module = "thaw_weights", frozen, mapping)]
struct Model {
    loaded: LoadedModel,
    /// The mapping key of each tensor, in placement order (see [`tensor_keys`]).
    keys: Vec<String>,
    report_json: String,
}

/// Each tensor's key: its name, or `FILE:NAME` where two files hold that name.
fn tensor_keys(loaded: &LoadedModel) -> Vec<String> {
    let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for t in &loaded.plan.tensors {
        *count.entry(t.name.as_str()).or_default() += 1;
    }
    loaded
        .plan
        .tensors
        .iter()
        .map(|t| {
            if count[t.name.as_str()] > 1 {
                format!("{}:{}", loaded.plan.files[t.file], t.name)
            } else {
                t.name.clone()
            }
        })
        .collect()
}

impl Model {
    fn tensor(&self, t: &PlacedTensor) -> Tensor {
        Tensor {
            allocation: self.loaded.allocation.clone(),
            placed: t.clone(),
            file: self.loaded.plan.files[t.file].clone(),
        }
    }
}

#[pymethods]
impl Model {
    /// Tensor names (`FILE:NAME` where two files share a name), in placement order.
    fn keys(&self) -> Vec<String> {
        self.keys.clone()
    }

    /// (name, Tensor) pairs in placement order.
    fn items(&self) -> Vec<(String, Tensor)> {
        self.keys
            .iter()
            .zip(&self.loaded.plan.tensors)
            .map(|(key, t)| (key.clone(), self.tensor(t)))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.keys.len()
    }

    fn __contains__(&self, name: &str) -> bool {
        self.keys.iter().any(|k| k == name)
    }

    fn __getitem__(&self, name: &str) -> PyResult<Tensor> {
        self.keys
            .iter()
            .position(|k| k == name)
            .map(|i| self.tensor(&self.loaded.plan.tensors[i]))
            .ok_or_else(|| PyKeyError::new_err(name.to_string()))
    }

    /// The load report: bytes, seconds, chunk sources (a dict).
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?
            .call_method1("loads", (&self.report_json,))
    }

    /// The device ("cpu", "cuda:0").
    #[getter]
    fn device(&self) -> String {
        self.loaded.allocation.device().to_string()
    }
}

/// Loads every tensor of model `name` (a tag or manifest id) onto `device` ("cpu", "cuda",
/// "cuda:N"). `store` and `cache_dir` default to `$THAW_STORE` and `$THAW_CACHE_DIR` (then
/// thaw's defaults); the GIL is released while the weights stream.
#[pyfunction]
#[pyo3(signature = (name, device = "cuda:0", store = None, cache_dir = None, lanes = None, concurrency = None))]
fn load(
    py: Python<'_>,
    name: String,
    device: &str,
    store: Option<String>,
    cache_dir: Option<PathBuf>,
    lanes: Option<usize>,
    concurrency: Option<usize>,
) -> PyResult<Model> {
    let device: DeviceKind = device
        .parse()
        .map_err(|e: weights::WeightsError| PyValueError::new_err(e.to_string()))?;
    let defaults = LoadOptions::default();
    let options = LoadOptions {
        lanes: lanes.unwrap_or(defaults.lanes),
        fetch_concurrency: concurrency.unwrap_or(defaults.fetch_concurrency),
        ..defaults
    };
    let loaded = py.detach(move || -> Result<LoadedModel, String> {
        let backend = weights::open_backend(device).map_err(|e| e.to_string())?;
        let config = resolve_config(store, cache_dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the async runtime: {e}"))?;
        runtime.block_on(async {
            let store = connect::open_store(&config).map_err(|e| e.to_string())?;
            // The allocation is the in-memory copy; a memory tier would hold a second one.
            let tiers = connect::streaming_tiers(&config, &store)
                .await
                .map_err(|e| e.to_string())?;
            let (manifest, map) = store
                .open_manifest(&name)
                .await
                .map_err(|e| e.to_string())?;
            weights::load_model(&tiers, &manifest, &map, &name, backend, &options, None)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let loaded = loaded.map_err(PyRuntimeError::new_err)?;
    let report_json = weights::report_json(&loaded.report).map_err(runtime_error)?;
    Ok(Model {
        keys: tensor_keys(&loaded),
        loaded,
        report_json,
    })
}

/// The configuration in effect (config file, then `THAW_*` variables, then the arguments), as
/// a dict: `store`, `cache`, `runtime`, `peers` (the S3 secret is never shown).
#[pyfunction]
#[pyo3(signature = (store = None, cache_dir = None))]
fn config(
    py: Python<'_>,
    store: Option<String>,
    cache_dir: Option<PathBuf>,
) -> PyResult<Bound<'_, PyAny>> {
    let config = resolve_config(store, cache_dir).map_err(PyValueError::new_err)?;
    let json = serde_json::to_string(&config).map_err(runtime_error)?;
    py.import("json")?.call_method1("loads", (json,))
}

/// The Python module.
#[pymodule]
#[pyo3(name = "thaw_weights")]
fn python_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(config, m)?)?;
    m.add_class::<Model>()?;
    m.add_class::<Tensor>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
