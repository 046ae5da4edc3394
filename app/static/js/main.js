// genserve playground: ES modules, no build step, nothing loaded from outside this server
// (the Content-Security-Policy allows only 'self'). A module script runs once the page is
// parsed, like a deferred one, so the elements below all exist.

import { setupAlternatives } from "./alternatives.js";
import { apiKey, setApiKey } from "./api.js";
import { chatKeydown, clearChat, sendChat, stopChat } from "./chat.js";
import {
  classifyDigit,
  classifyText,
  clearDigit,
  loadDigitFile,
  setupDrawing,
} from "./classify.js";
import { $, guard, onSubmit, setStatus, userAction } from "./dom.js";
import { followImageModel, generateImage } from "./image.js";
import { loadModels, showVersion } from "./models.js";
import { generateText, stopText } from "./text.js";
import { loadTraining, showKind, submitJob } from "./train.js";
import {
  clearVAE,
  followVAEModel,
  interpolate,
  loadVAEFile,
  reconstruct,
  setupVAE,
} from "./vae.js";

function refreshAll() {
  return Promise.all([guard(loadModels), guard(loadTraining)]);
}

function wire() {
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("#key-input").value.trim());
    setStatus("API key saved for this tab.");
    refreshAll();
  });
  $("#key-clear").addEventListener("click", () => {
    setApiKey("");
    setStatus("API key cleared.");
  });
  $("#key-dialog-cancel").addEventListener("click", () => $("#key-dialog").close(""));
  // Also fired by models.js each time it refills the options from GET /models.
  for (const select of document.querySelectorAll("select[data-task]")) {
    select.addEventListener("change", () => showVersion(select));
  }
  $("#image-model").addEventListener("change", followImageModel);
  onSubmit("#text-form", generateText, $("#text-stats"));
  $("#text-stop").addEventListener("click", stopText);
  setupAlternatives($("#text-output"));
  onSubmit("#chat-form", sendChat); // shows its own errors in #chat-status
  $("#chat-input").addEventListener("keydown", chatKeydown);
  $("#chat-stop").addEventListener("click", stopChat);
  $("#chat-clear").addEventListener("click", clearChat);
  onSubmit("#image-form", generateImage, $("#image-caption"));
  const imageResult = $("#classify-image-result");
  onSubmit("#classify-text-form", classifyText, $("#classify-text-result"));
  onSubmit("#classify-image-form", classifyDigit, imageResult);
  const digitFile = $("#digit-file");
  digitFile.addEventListener("change", () =>
    userAction(() => loadDigitFile(digitFile), imageResult),
  );
  $("#digit-clear").addEventListener("click", clearDigit);
  $("#vae-model").addEventListener("change", followVAEModel);
  const vaeCaption = $("#vae-caption");
  onSubmit("#vae-form", interpolate, vaeCaption);
  $("#vae-reconstruct").addEventListener("click", () => userAction(reconstruct));
  $("#vae-clear").addEventListener("click", clearVAE);
  ["a", "b"].forEach((side, i) => {
    const input = $(`#vae-file-${side}`);
    input.addEventListener("change", () => userAction(() => loadVAEFile(i, input), vaeCaption));
  });
  $("#train-kind").addEventListener("change", showKind);
  onSubmit("#train-form", submitJob);
  $("#models-refresh").addEventListener("click", () => userAction(loadModels));
  setupDrawing();
  setupVAE();
}

wire();
$("#key-input").value = apiKey();
refreshAll();
