// The page of `transeg serve`: send an image to /predict, lay the label PNG over it, list its classes.
"use strict";

const $ = (id) => document.getElementById(id);
let meta = null;
let labelsUrl = null;
let photoUrl = null;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadMetadata() {
  const response = await fetch("/metadata");
  meta = await response.json();
  $("model").textContent = `${meta.model} (${meta.classes.length} classes, ${meta.backend} on ${meta.device})`;
}

function showLegend(present) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const id of present) {
    const [r, g, b] = meta.palette[id] || [0, 0, 0];
    const item = document.createElement("li");
    item.dataset.classId = String(id);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${r}, ${g}, ${b})`;
    const name = document.createElement("span");
    name.textContent = meta.classes[id] ?? `class ${id}`;
    item.append(swatch, name);
    legend.append(item);
  }
}

async function segment(file) {
  if (!meta) await loadMetadata();
  setStatus(`segmenting ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  const started = performance.now();
  const response = await fetch("/predict", { method: "POST", body: form });
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: response.statusText }));
    setStatus(`error ${response.status}: ${body.error}`, true);
    return;
  }
  const present = (response.headers.get("X-Transeg-Classes") || "").split(",").filter(Boolean).map(Number);
  const blob = await response.blob();
  for (const url of [labelsUrl, photoUrl]) if (url) URL.revokeObjectURL(url);
  labelsUrl = URL.createObjectURL(blob);
  photoUrl = URL.createObjectURL(file);
  $("photo").src = photoUrl;
  $("labels").src = labelsUrl;
  $("download").href = labelsUrl;
  $("download").download = file.name.replace(/\.[^.]*$/, "") + "_labels.png";
  showLegend(present);
  $("result").hidden = false;
  setStatus(`${file.name}: ${present.length} classes in ${Math.round(performance.now() - started)} ms`);
}

$("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) segment(file);
});
$("opacity").addEventListener("input", (event) => {
  $("labels").style.opacity = String(event.target.value / 100);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const [file] = event.dataTransfer.files;
  if (file) segment(file);
});
loadMetadata().catch((error) => setStatus(`cannot read /metadata: ${error}`, true));
