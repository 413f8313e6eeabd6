//! Placement: where every tensor goes in one destination allocation, and which bytes of which
//! chunk are copied where.
//!
//! Tensors keep their files' order and are placed at offsets aligned to [`Plan::alignment`]
//! (256 bytes by default, what `cuMemAlloc` guarantees for its own allocations). Each chunk of
//! the model is fetched once, however many files or tensors it feeds; its [`Segment`]s say which
//! of its bytes land where. Segments that are contiguous in both the chunk and the destination are
//! merged, so a tightly packed file costs one copy per chunk. Tensor bytes no extent covers (holes
//! in a sparse file) are listed in [`Plan::zeroed`] and cleared on the device.

use std::collections::HashMap;
use std::ops::Range;

use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::Manifest;
use thaw_core::pack::ChunkRef;

use crate::model::ModelFile;
use crate::Result;

/// Default placement alignment in bytes.
pub const DEFAULT_ALIGNMENT: u64 = 256;

/// A tensor's place in the destination allocation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlacedTensor {
    /// Index of its file in [`Plan::files`].
    pub file: usize,
    /// Tensor name.
    pub name: String,
    /// Element type (`BF16`, `F32`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte offset in the allocation.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
}

/// Bytes `chunk_offset..chunk_offset + len` of a chunk go to `dst..dst + len` of the allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset in the chunk's uncompressed bytes.
    pub chunk_offset: u32,
    /// Offset in the destination allocation.
    pub dst: u64,
    /// Bytes to copy.
    pub len: u32,
}

/// One chunk to fetch and the copies it feeds.
#[derive(Clone, Debug)]
pub struct ChunkJob {
    /// The chunk (id, length, pack location).
    pub chunk: ChunkRef,
    /// Where its bytes go, in destination order.
    pub segments: Vec<Segment>,
}

impl ChunkJob {
    /// Bytes this job copies into the destination.
    pub fn copy_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len as u64).sum()
    }

    /// The end of the furthest chunk byte any segment reads.
    pub fn chunk_bytes_needed(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.chunk_offset as u64 + s.len as u64)
            .max()
            .unwrap_or(0)
    }
}

/// The complete placement of a model.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Paths of the model's files, in placement order.
    pub files: Vec<String>,
    /// Every tensor, in placement order.
    pub tensors: Vec<PlacedTensor>,
    /// One job per distinct chunk, in the order the files first need them.
    pub jobs: Vec<ChunkJob>,
    /// Destination ranges to clear (tensor bytes that lie in holes of sparse files).
    pub zeroed: Vec<Range<u64>>,
    /// Size of the destination allocation.
    pub total_bytes: u64,
    /// Alignment of every tensor's offset.
    pub alignment: u64,
}

impl Plan {
    /// Places the tensors of `files` (from [`crate::model::model_files`]) at `alignment`
    /// (a power of two) and maps every chunk byte they need to its destination.
    pub fn build(
        manifest: &Manifest,
        map: &ChunkMap,
        files: &[ModelFile],
        alignment: u64,
    ) -> Result<Plan> {
        assert!(
            alignment.is_power_of_two(),
            "alignment must be a power of two"
        );
        let mut builder = Builder {
            jobs: Vec::new(),
            job_of_chunk: HashMap::new(),
            zeroed: Vec::new(),
        };
        let mut tensors = Vec::new();
        let mut cursor = 0u64;
        for (file_index, file) in files.iter().enumerate() {
            let first = tensors.len();
            for t in &file.header.tensors {
                cursor = cursor.next_multiple_of(alignment);
                tensors.push(PlacedTensor {
                    file: file_index,
                    name: t.name.clone(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                    offset: cursor,
                    len: t.end - t.begin,
                });
                cursor += t.end - t.begin;
            }
            builder.add_file(manifest, map, file, &tensors[first..])?;
        }
        Ok(Plan {
            files: files.iter().map(|f| f.path.clone()).collect(),
            tensors,
            jobs: builder.jobs,
            zeroed: builder.zeroed,
            total_bytes: cursor,
            alignment,
        })
    }

    /// Bytes of tensor data the plan copies (excluding zeroed holes and alignment padding).
    pub fn copy_bytes(&self) -> u64 {
        self.jobs.iter().map(ChunkJob::copy_bytes).sum()
    }

    /// Bytes of tensor data in total.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }

    /// The largest chunk any job reads (the staging buffer size a copy lane needs).
    pub fn largest_chunk(&self) -> u64 {
        self.jobs
            .iter()
            .map(|j| j.chunk.raw_len as u64)
            .max()
            .unwrap_or(0)
    }
}

struct Builder {
    jobs: Vec<ChunkJob>,
    job_of_chunk: HashMap<u32, usize>,
    zeroed: Vec<Range<u64>>,
}

impl Builder {
    /// Maps `file`'s extents onto its already placed `tensors` (same order as its header).
    fn add_file(
        &mut self,
        manifest: &Manifest,
        map: &ChunkMap,
        file: &ModelFile,
        tensors: &[PlacedTensor],
    ) -> Result<()> {
        let data_start = file.header.data_start;
        let file_range = |i: usize| {
            let t = &file.header.tensors[i];
            data_start + t.begin..data_start + t.end
        };
        // How far (file offset) each tensor's bytes are covered by extents so far.
        let mut covered: Vec<u64> = (0..tensors.len()).map(|i| file_range(i).start).collect();
        let mut first_open = 0;
        for extent in manifest.extents(&file.inode)? {
            let ext_start = extent.file_offset;
            let ext_end = ext_start + extent.len as u64;
            while first_open < tensors.len() && file_range(first_open).end <= ext_start {
                first_open += 1;
            }
            let mut t = first_open;
            while t < tensors.len() && file_range(t).start < ext_end {
                let range = file_range(t);
                let start = range.start.max(ext_start);
                let end = range.end.min(ext_end);
                if start < end {
                    let dst_of = |file_offset: u64| tensors[t].offset + (file_offset - range.start);
                    if start > covered[t] {
                        self.zeroed.push(dst_of(covered[t])..dst_of(start));
                    }
                    covered[t] = end;
                    let segment = Segment {
                        chunk_offset: extent.chunk_offset + (start - ext_start) as u32,
                        dst: dst_of(start),
                        len: (end - start) as u32,
                    };
                    self.push(
                        map.chunk_ref(manifest, extent.chunk)?,
                        extent.chunk,
                        segment,
                    );
                }
                t += 1;
            }
        }
        for (t, tensor) in tensors.iter().enumerate() {
            let range = file_range(t);
            if covered[t] < range.end {
                let from = tensor.offset + (covered[t] - range.start);
                self.zeroed.push(from..tensor.offset + tensor.len);
            }
        }
        Ok(())
    }

    fn push(&mut self, chunk: ChunkRef, index: u32, segment: Segment) {
        let job = *self.job_of_chunk.entry(index).or_insert_with(|| {
            self.jobs.push(ChunkJob {
                chunk,
                segments: Vec::new(),
            });
            self.jobs.len() - 1
        });
        let segments = &mut self.jobs[job].segments;
        if let Some(last) = segments.last_mut() {
            let contiguous = last.chunk_offset as u64 + last.len as u64
                == segment.chunk_offset as u64
                && last.dst + last.len as u64 == segment.dst;
            if contiguous {
                last.len += segment.len;
                return;
            }
        }
        segments.push(segment);
    }
}
