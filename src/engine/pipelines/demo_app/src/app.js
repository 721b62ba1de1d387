const pilots = [["Duke", 9120], ["Amita", 8840], ["Mara", 8310], ["Andy", 7990]];
const list = document.getElementById("leaderboard");
for (const [name, score] of pilots) {
  const item = document.createElement("li");
  item.textContent = `${name}: ${score}`;
  list.appendChild(item);
}
