// The in-memory form of one TrackML event, column for column as in the Kaggle files
// (eventNNNNNNNNN-{hits,cells,particles,truth}.csv): structs of arrays, floats as stored (f4),
// particle_id as uint64 (barcodes pass 2^53; 0 = noise). Units: mm, GeV/c, e.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mambatrack::data {

// hits.csv: hit_id,x,y,z,volume_id,layer_id,module_id
struct Hits {
  std::vector<int32_t> hit_id;
  std::vector<float> x, y, z;
  std::vector<int32_t> volume_id, layer_id, module_id;
  std::size_t size() const { return hit_id.size(); }
};

// cells.csv: hit_id,ch0,ch1,value
struct Cells {
  std::vector<int32_t> hit_id, ch0, ch1;
  std::vector<float> value;
  std::size_t size() const { return hit_id.size(); }
};

// particles.csv: particle_id,[particle_type,]vx,vy,vz,px,py,pz,q,nhits
struct Particles {
  std::vector<uint64_t> particle_id;
  std::vector<int32_t> particle_type;  // empty when the file has no particle_type column
  std::vector<float> vx, vy, vz, px, py, pz;
  std::vector<int32_t> q, nhits;
  std::size_t size() const { return particle_id.size(); }
  bool has_particle_type() const { return !particle_type.empty(); }
};

// truth.csv: hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight
struct Truth {
  std::vector<int32_t> hit_id;
  std::vector<uint64_t> particle_id;
  std::vector<float> tx, ty, tz, tpx, tpy, tpz, weight;
  std::size_t size() const { return hit_id.size(); }
};

// One event; parts that were not read (or do not exist, e.g. test events have no truth) stay
// empty.
struct Event {
  int64_t event_id = 0;
  Hits hits;
  Cells cells;
  Particles particles;
  Truth truth;
};

// detectors.csv: one row per module. Global = R * local + c with R's rows (rot_xu, rot_xv,
// rot_xw), (rot_yu, ...), (rot_zu, ...); half-lengths in u at the two v edges (equal:
// rectangle), half-length in v, thickness, cell pitches.
struct ModuleRecord {
  int32_t volume_id = 0, layer_id = 0, module_id = 0;
  double cx = 0, cy = 0, cz = 0;
  double rot[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};  // rot[global axis][local axis]
  double thickness = 0, min_hu = 0, max_hu = 0, hv = 0, pitch_u = 0, pitch_v = 0;
};

// particle_id bit fields (trackml-library utils.decode_particle_id).
struct ParticleBarcode {
  uint32_t vertex_id, primary_id, generation, secondary_id, process;
};
inline ParticleBarcode decode_particle_id(uint64_t id) {
  return ParticleBarcode{static_cast<uint32_t>((id & 0xfff0000000000000ull) >> 52),
                         static_cast<uint32_t>((id & 0x000ffff000000000ull) >> 36),
                         static_cast<uint32_t>((id & 0x0000000fff000000ull) >> 24),
                         static_cast<uint32_t>((id & 0x0000000000fff000ull) >> 12),
                         static_cast<uint32_t>(id & 0x0000000000000fffull)};
}
inline uint64_t encode_particle_id(const ParticleBarcode& b) {
  return (static_cast<uint64_t>(b.vertex_id & 0xfffu) << 52) |
         (static_cast<uint64_t>(b.primary_id & 0xffffu) << 36) |
         (static_cast<uint64_t>(b.generation & 0xfffu) << 24) |
         (static_cast<uint64_t>(b.secondary_id & 0xfffu) << 12) | (b.process & 0xfffu);
}

}  // namespace mambatrack::data
