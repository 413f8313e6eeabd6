//! DLPack export: a tensor of a loaded model as a `dltensor` capsule that PyTorch, NumPy, JAX
//! and CuPy import without a copy.
//!
//! The structs follow dlpack.h (the unversioned `DLManagedTensor` every consumer accepts). Each
//! capsule holds a reference to the model's allocation, so the memory lives as long as any
//! tensor made from it; the consumer calls the deleter when it is done, or the capsule's
//! destructor does when it was never consumed.

use std::ffi::{c_void, CStr};
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use weights::{Allocation, DeviceKind};

/// The capsule name a producer gives; a consumer renames it to `used_dltensor`.
const CAPSULE_NAME: &CStr = c"dltensor";

/// kDLCPU.
pub const DEVICE_CPU: i32 = 1;
/// kDLCUDA.
pub const DEVICE_CUDA: i32 = 2;

#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// What keeps an exported tensor's memory and shape alive.
struct Owner {
    _allocation: Arc<dyn Allocation>,
    _shape: Vec<i64>,
}

/// The DLPack type of a safetensors dtype; `None` for the float8 kinds DLPack 0.8 lacks.
fn dl_type(dtype: &str) -> Option<DLDataType> {
    let (code, bits) = match dtype {
        "BOOL" => (6, 8),
        "U8" => (1, 8),
        "I8" => (0, 8),
        "U16" => (1, 16),
        "I16" => (0, 16),
        "F16" => (2, 16),
        "BF16" => (4, 16),
        "U32" => (1, 32),
        "I32" => (0, 32),
        "F32" => (2, 32),
        "U64" => (1, 64),
        "I64" => (0, 64),
        "F64" => (2, 64),
        "C64" => (5, 64),
        _ => return None,
    };
    Some(DLDataType {
        code,
        bits,
        lanes: 1,
    })
}

/// The DLPack device of an allocation: (device type, device id).
pub fn device_of(device: DeviceKind) -> (i32, i32) {
    match device {
        DeviceKind::Cpu => (DEVICE_CPU, 0),
        DeviceKind::Cuda { ordinal } => (DEVICE_CUDA, ordinal as i32),
    }
}

unsafe extern "C" fn delete_managed(managed: *mut DLManagedTensor) {
    if managed.is_null() {
        return;
    }
    // SAFETY: both boxes were leaked by `capsule` and are freed once, here.
    unsafe {
        let managed = Box::from_raw(managed);
        drop(Box::from_raw(managed.manager_ctx as *mut Owner));
    }
}

unsafe extern "C" fn destroy_capsule(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule; a consumed capsule was renamed and is skipped.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE_NAME.as_ptr()) == 1 {
            let managed =
                ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr()) as *mut DLManagedTensor;
            delete_managed(managed);
        }
    }
}

/// A `dltensor` capsule for `len` bytes at `offset` of `allocation`, typed `dtype` with
/// `shape`. Errors name the tensor when its dtype has no DLPack type.
pub fn capsule(
    py: Python<'_>,
    name: &str,
    allocation: &Arc<dyn Allocation>,
    offset: u64,
    dtype: &str,
    shape: &[u64],
) -> PyResult<Py<PyAny>> {
    let dl_dtype = dl_type(dtype).ok_or_else(|| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "tensor {name}: dtype {dtype} has no DLPack type; read its bytes with Tensor.read()"
        ))
    })?;
    let mut shape: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
    let (device_type, device_id) = device_of(allocation.device());
    let shape_ptr = shape.as_mut_ptr();
    let ndim = shape.len() as i32;
    // Moving the Vec into the owner keeps its heap buffer (and `shape_ptr`) where it is.
    let owner = Box::into_raw(Box::new(Owner {
        _allocation: allocation.clone(),
        _shape: shape,
    }));
    let managed = Box::into_raw(Box::new(DLManagedTensor {
        dl_tensor: DLTensor {
            data: allocation.address() as *mut c_void,
            device: DLDevice {
                device_type,
                device_id,
            },
            ndim,
            dtype: dl_dtype,
            shape: shape_ptr,
            strides: std::ptr::null_mut(),
            byte_offset: offset,
        },
        manager_ctx: owner as *mut c_void,
        deleter: Some(delete_managed),
    }));
    // SAFETY: the name is a static C string; on failure the boxes are freed here.
    unsafe {
        let capsule = ffi::PyCapsule_New(
            managed as *mut c_void,
            CAPSULE_NAME.as_ptr(),
            Some(destroy_capsule),
        );
        if capsule.is_null() {
            delete_managed(managed);
            return Err(PyErr::fetch(py));
        }
        Ok(Py::from_owned_ptr(py, capsule))
    }
}
